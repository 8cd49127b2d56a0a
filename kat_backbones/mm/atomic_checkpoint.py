"""Checkpoints that are never half-written: ``kat_backbones.AtomicCheckpointHook``.

mmengine's ``CheckpointHook`` (0.10.x) deletes the oldest checkpoint *before* writing the new one, writes the new file
under its final name and then points ``last_checkpoint`` at it. A kill while it writes (a preemption, a lost node, an
out-of-memory kill) with ``max_keep_ckpts=1`` leaves a truncated ``epoch_2.pth``, no ``epoch_1.pth`` and a
``last_checkpoint`` naming the deleted file: nothing to resume from.

:class:`AtomicCheckpointHook` keeps everything else of ``CheckpointHook`` (intervals, naming, ``save_best``, published
keys, the ``keep_ckpt_ids`` bookkeeping mmengine restores on resume) and changes the order of one save:

1. the checkpoint is written to ``<name>.part`` in the same directory and flushed to disk (``fsync``);
2. it is renamed to ``<name>`` (``os.replace``: atomic on POSIX file systems, so the final name only ever holds a
   complete file);
3. ``last_checkpoint`` is rewritten the same way (temporary file + rename);
4. only then are the checkpoints beyond ``max_keep_ckpts`` deleted.

A kill at any moment therefore leaves ``last_checkpoint`` naming a complete checkpoint (the new one, or the previous
one, which still exists) and at worst a stale ``*.part`` file, which the next run removes. Only local directories
get this treatment; other storage backends (``backend_args`` for S3/Petrel) fall back to mmengine's behaviour.

``tools/train.py`` swaps ``type='CheckpointHook'`` for this hook (see :mod:`kat_backbones.mm.fault_tolerance`).
"""

from __future__ import annotations

import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from .registry import HOOKS

__all__ = ["PART_SUFFIX", "AtomicCheckpointHook", "replace_file_atomically", "write_text_atomically"]

#: Suffix of a checkpoint while it is being written.
PART_SUFFIX = ".part"


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file_atomically(tmp_path: str, final_path: str) -> None:
    """Flushes ``tmp_path`` to disk and renames it to ``final_path`` (atomic on POSIX), then flushes the directory
    entry, so a crash leaves either the old or the new file under ``final_path``, never a partial one."""
    _fsync_path(tmp_path)
    os.replace(tmp_path, final_path)
    try:
        _fsync_path(osp.dirname(osp.abspath(final_path)))
    except OSError:  # some file systems (and Windows) cannot fsync a directory; the rename itself is done
        pass


def write_text_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and :func:`replace_file_atomically`."""
    tmp = f"{path}{PART_SUFFIX}"
    with open(tmp, "w") as f:
        f.write(text)
    replace_file_atomically(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe saving (``type='kat_backbones.AtomicCheckpointHook'``).

    Same arguments as :class:`mmengine.hooks.CheckpointHook`. A checkpoint is written to ``<name>.part``, flushed,
    renamed to ``<name>``, ``last_checkpoint`` is updated (also via rename), and only then are checkpoints beyond
    ``max_keep_ckpts`` deleted; see the module docstring. Leftover ``*.part`` files of a killed run are removed
    when training starts.
    """

    def _is_local(self) -> bool:
        return isinstance(getattr(self, "file_backend", None), LocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            for stale in sorted(glob.glob(osp.join(glob.escape(self.out_dir), f"*{PART_SUFFIX}"))):
                os.remove(stale)
                print_log(f"AtomicCheckpointHook: removed {stale} (a save interrupted by a kill)", logger="current")

    def save_checkpoint_as(self, runner, filename: str, meta: dict, by_epoch: bool) -> str:
        """Saves the runner's state to ``out_dir/filename`` atomically and points ``last_checkpoint`` at it, without
        the ``max_keep_ckpts`` rotation (used by :class:`~kat_backbones.mm.preemption.PreemptionHook` for a
        checkpoint taken off the saving interval).

        Returns:
            str: The checkpoint's path.
        """
        path = self.file_backend.join_path(self.out_dir, filename)
        self.last_ckpt = path
        runner.message_hub.update_info("last_ckpt", path)
        self._write(runner, filename, meta, by_epoch)
        return path

    def _write(self, runner, filename: str, meta: dict, by_epoch: bool) -> None:
        """``runner.save_checkpoint`` to ``filename.part``, rename, update ``last_checkpoint`` (main process)."""
        local = self._is_local()
        runner.save_checkpoint(
            self.out_dir,
            f"{filename}{PART_SUFFIX}" if local else filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():
            return
        final = self.file_backend.join_path(self.out_dir, filename)
        if local:
            replace_file_atomically(f"{final}{PART_SUFFIX}", final)
            write_text_atomically(osp.join(runner.work_dir, "last_checkpoint"), final)
        else:
            with open(osp.join(runner.work_dir, "last_checkpoint"), "w") as f:
                f.write(final)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        # the keep_ckpt_ids bookkeeping as mmengine (the saved message hub lists this step), the deletion deferred
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        self._write(runner, filename, meta, self.by_epoch)

        if not is_main_process():
            return
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if old != step and self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif old != step and self.file_backend.isdir(path):  # deepspeed checkpoints are directories
                self.file_backend.rmtree(path)
