"""Trainer: SFT or DPO fine-tuning (LoRA, QLoRA or full) of a reactor Llama.

    from reactor_core import Trainer, TrainingConfig
    config = TrainingConfig(model_name="prime-135m-chat", use_lora=True, lora_rank=16, num_epochs=3)
    result = Trainer(config).train("./data/train.jsonl")
    result.metrics["eval/loss"], result.outputs["adapter"]

The run directory (run.output_dir) receives config.json (the resolved config),
metrics.jsonl, tensorboard/, loss_curve.png, adapter/ (PEFT) or model/ (full fine-tuning),
merged/ on request, and checkpoints/ when checkpointing is on.

Resume and preemption: with checkpoint.every_n_steps > 0, train() first restores the newest
complete checkpoint in checkpoint.dir (default <output_dir>/checkpoints; local or gs://)
and continues bit for bit (params, optimizer state, step, RNG, data position, tokens seen).
SIGTERM or a GCE metadata preemption notice stops the loop after the current step: a
synchronous checkpoint, the hooks' end (metrics flushed), then `Preempted` is raised
(`//reactor:train` exits with 143); running again resumes. At most run.steps_in_flight (1 or
2) steps are ever dispatched ahead of the device, so the notice waits for at most that many
steps before the save; the progress bar and the pace figures count finished steps only.

The train and eval steps go through JAX's persistent compilation cache (compile_cache.py):
a resumed run with the same config starts its first step without compiling.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from reactor_core.dist import multihost
from reactor_core.dist import sharding as sharding_lib
from reactor_core.dist.preemption import PreemptionWatcher
from reactor_core.train import base_model, compile_cache, environment, objectives
from reactor_core.train import state as state_lib
from reactor_core.train.checkpoint_hook import Checkpoint, checkpoint_dir
from reactor_core.train.config import TrainingConfig
from reactor_core.train.eval_hook import Evaluate
from reactor_core.train.hooks import Hook, Preempted, Run
from reactor_core.train.metrics_hooks import JsonlWriter, ProgressBar, TensorBoardWriter, TrainMetrics, default_paths
from reactor_core.train.optim import build_optimizer
from reactor_core.train.pace import Pace, format_duration
from reactor_core.train.plot import LossCurve
from reactor_core.train.step import make_eval_step, make_train_step

log = logging.getLogger("reactor_core.train")


@dataclasses.dataclass
class TrainResult:
    metrics: dict[str, float]  # the latest value of every metric (train/*, eval/*)
    initial_metrics: dict[str, float]  # the first value of every metric (eval/* before training)
    steps: int
    output_dir: str
    outputs: dict[str, str]  # config, metrics, tensorboard, plot, adapter / model, merged, checkpoints
    data_stats: dict
    history: list[dict]


class Trainer:
    """Trains per a TrainingConfig. `model`/`tokenizer` may be given (tests, notebooks).

    The run is laid out on a mesh (config.mesh) over `devices` (default: every device of
    every process, jax.devices()).
    """

    def __init__(
        self,
        config: TrainingConfig,
        *,
        model: nnx.Module | None = None,
        tokenizer=None,
        hooks: Iterable[Hook] = (),
        devices: Sequence | None = None,
    ):
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"Trainer needs a TrainingConfig, got {type(config).__name__}")
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.extra_hooks = list(hooks)
        self.devices = None if devices is None else list(devices)  # None: jax.devices() when training
        self.placement: state_lib.Placement | None = None  # the last run's mesh and shardings
        num_params = (
            base_model.num_params(config.model)
            if model is None
            else state_lib.count_params(nnx.state(model, nnx.Param))
        )
        environment.check_can_train(config.model.name, num_params, force=config.run.force)

    # ---- setup ----

    def _load_model(self, config: TrainingConfig):
        full = not config.lora.enabled
        if self.model is not None:
            model, tokenizer, source = self.model, self.tokenizer, config.model.path or config.model.name
        else:
            model, tokenizer, source = base_model.load_base(
                config.model, full_finetune=full, seed=config.run.seed, quant_config=config.quant
            )
            tokenizer = self.tokenizer or tokenizer
        if tokenizer is None:
            raise ValueError("no tokenizer: model.path='random' needs Trainer(config, tokenizer=...)")
        base_model.prepare(model, config.lora, config.quant, remat=config.model.remat, seed=config.run.seed)
        return model, tokenizer, source

    def _datasets(self, config: TrainingConfig, tokenizer):
        from reactor_core.data import chat, iterator
        from reactor_core.data import dataset as dataset_lib

        dc = config.data
        sft = config.run.mode == "sft"
        build = dataset_lib.build_sft_dataset if sft else dataset_lib.build_preference_dataset
        batches_cls = iterator.SFTBatches if sft else iterator.PreferenceBatches
        pad_id = chat.pad_token_id(tokenizer)
        train_set = build(dc, tokenizer, split="train")
        train_set.stats.log_summary(log)
        train = batches_cls(train_set, dc, pad_id=pad_id, shuffle=dc.shuffle, repeat=True)
        train.stats = train_set.stats
        rows = (
            len(train_set)
            if not (sft and dc.pack)
            else _count_rows(batches_cls(train_set, dc, pad_id=pad_id, shuffle=False, repeat=False))
        )
        eval_batches = []
        if dc.eval_path or dc.eval_fraction > 0:
            eval_set = build(dc, tokenizer, split="eval")
            eval_set.stats.log_summary(log)
            for i, batch in enumerate(batches_cls(eval_set, dc, pad_id=pad_id, shuffle=False, repeat=False)):
                if config.run.eval_batches and i >= config.run.eval_batches:
                    break
                eval_batches.append(batch)
        return train, rows, eval_batches

    def _reference(self, config: TrainingConfig, model, split: state_lib.SplitModel):
        """DPO reference weights: None (LoRA off), a separate model, or a frozen copy of the start."""
        if config.run.mode != "dpo":
            return None
        if config.dpo.reference:
            ref_model, _, _ = base_model.load_base(
                dataclasses.replace(config.model, path=config.dpo.reference),
                full_finetune=False,
                seed=config.run.seed,
                tokenizer=False,
            )
            split.reference_graphdef, ref_state = nnx.split(ref_model)
            return ref_state
        if config.lora.enabled:
            return None
        # Full fine-tuning: the starting weights, copied (the trained ones are donated each step).
        split.reference_graphdef, ref_state = nnx.split(model)
        return jax.tree.map(jnp.copy, ref_state)

    # ---- the run ----

    def train(
        self, data: str | os.PathLike | None = None, *, eval_data: str | os.PathLike | None = None
    ) -> TrainResult:
        """Trains on `data` (JSONL; overrides config.data.path) and returns metrics and output paths."""
        overrides = {}
        if data is not None:
            overrides["data_path"] = os.fspath(data)
        if eval_data is not None:
            overrides["eval_data"] = os.fspath(eval_data)
        config = self.config.replace(**overrides) if overrides else self.config
        if not config.data.path:
            raise ValueError("No training data: call trainer.train('train.jsonl') or set data_path / --data.")
        paths = default_paths(config.run.output_dir)
        devices = self.devices or jax.devices()
        check_batch_fits_mesh(config, len(devices))
        primary = multihost.is_primary()  # only process 0 writes the run directory
        if primary:
            os.makedirs(config.run.output_dir, exist_ok=True)

        model, tokenizer, source = self._load_model(config)
        train_batches, rows_per_epoch, eval_batches = self._datasets(config, tokenizer)
        accum = config.optim.grad_accum_steps
        if config.run.max_steps:
            total_steps = config.run.max_steps
        else:
            total_steps = max(1, math.ceil(rows_per_epoch * config.run.num_epochs / (config.data.batch_size * accum)))

        split, params, rng = state_lib.split_model(model, use_lora=config.lora.enabled)
        reference = self._reference(config, model, split)
        tx, schedule = build_optimizer(config.optim, total_steps)
        # Every array onto the mesh (config.mesh): shardings from the logical axis names.
        placement, train_state, split.frozen, reference = state_lib.place_on_mesh(
            config.mesh, params, rng, split.frozen, reference, tx, devices=devices
        )
        self.placement = placement
        del params, rng
        log.info(
            "training %s parameters (%s frozen) for %d steps on mesh %s (%s)",
            f"{state_lib.count_params(train_state.params):,}",
            f"{state_lib.count_params(split.frozen):,}",
            total_steps,
            dict(placement.mesh.shape),
            config.mesh.strategy,
        )
        objective = objectives.make_objective(config.run, config.dpo)
        # Before the first compile: a resumed (or repeated) run reads its steps from disk.
        cache = compile_cache.enable(compile_cache.CacheConfig.for_run(config))
        train_step = make_train_step(split, objective, tx, schedule, placement)

        run = Run(
            config=config, output_dir=config.run.output_dir, total_steps=total_steps, state=train_state, split=split
        )
        run.reference = reference
        run.placement = placement
        run.pace = Pace(total_steps=total_steps, start_step=0)
        run.train_batches = train_batches
        run.outputs["config"] = paths["config"]
        hooks: list[Hook] = [
            *([JsonlWriter(paths["metrics"]), TensorBoardWriter(paths["tensorboard"])] if primary else []),
            ProgressBar(config.run.progress and primary),
            TrainMetrics(config.run.log_every),
        ]
        if eval_batches:
            eval_step = make_eval_step(split, objective, placement)
            hooks.append(Evaluate(eval_step, eval_batches, every_n_steps=config.run.eval_every))
        ckpt = None
        if config.checkpoint.every_n_steps:
            ckpt = Checkpoint(
                checkpoint_dir(config, config.run.output_dir),  # gs:// stays a URL
                every_n_steps=config.checkpoint.every_n_steps,
                keep=config.checkpoint.keep,
                resume=config.checkpoint.resume,
            )
            hooks.append(ckpt)
        if config.run.plot and primary:
            hooks.append(LossCurve(paths["plot"]))
        run.hooks = hooks + self.extra_hooks
        if ckpt is not None:
            ckpt.restore(run)  # newest complete checkpoint -> state, step, tokens, data position
            run.pace = Pace(total_steps=total_steps, start_step=run.step)
        if primary:  # after the restore check: a refused resume leaves the run's config.json as it was
            with open(paths["config"], "w") as f:
                f.write(config.to_json() + "\n")

        # SIGTERM (spot VMs get it ~30 s ahead) or the metadata server's notice: stop after the step.
        with PreemptionWatcher() as watcher, compile_cache.Compilations() as compiles:
            for hook in run.hooks:
                hook.start(run)
            self._loop(run, train_step, watcher, compiles, cache)
            for hook in run.hooks:
                hook.end(run)
        cache.finish(wait=not run.preempted)  # a preempted VM has no time to upload the cache
        if run.preempted:
            directory, saved = (ckpt.directory, ckpt.last_step) if ckpt else (None, None)
            raise Preempted(run.step, run.preempted, directory, saved)

        params, frozen = run.state.params, split.frozen
        if jax.process_count() > 1:  # whole values on every process (a collective), then process 0 writes
            params, split.frozen = sharding_lib.gather((params, frozen), placement.mesh)
        final_model = split.merge(params, run.state.rng, train=False)
        if primary:
            self._export(config, final_model, tokenizer, source, paths, run)
        self.model = final_model
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for record in run.history:
            for key, value in record.items():
                if key != "step":
                    first.setdefault(key, value)
                    last[key] = value
        return TrainResult(
            metrics=last,
            initial_metrics=first,
            steps=run.step,
            output_dir=config.run.output_dir,
            outputs=dict(run.outputs),
            data_stats=train_batches.stats.to_dict() if train_batches.stats else {},
            history=run.history,
        )

    def _loop(self, run: Run, train_step, watcher: PreemptionWatcher, compiles, cache) -> None:
        """Steps until the end or a preemption notice, with at most run.steps_in_flight unfinished.

        JAX returns from a dispatch long before the device has computed the step. Unbounded,
        the host would run log_every steps ahead: the progress bar would count steps not done,
        and a SIGTERM would wait for all of them before its save (GCP gives ~30 s).
        """
        config, split, reference = run.config, run.split, run.reference
        accum = config.optim.grad_accum_steps
        limit = config.run.steps_in_flight
        in_flight: collections.deque = collections.deque()  # (step, metrics, tokens_seen) not yet waited on
        run.pace.start(time.perf_counter(), run.tokens_seen, run.paused_s)
        while run.step < run.total_steps:
            batch = _stack([next(run.train_batches) for _ in range(accum)])
            run.state, metrics = train_step(run.state, split.frozen, reference, batch)
            run.step += 1
            run.tokens_seen += objectives.batch_tokens(batch)
            run.pending.append(metrics)
            in_flight.append((run.step, metrics, run.tokens_seen))
            for hook in run.hooks:
                if hook.due(run):
                    hook.after_step(run)
            if run.pace.first_step_s is None:  # this process's first step: compile (or cache), then run
                _finish(run, in_flight, 0)
                _report_first_step(run, compiles)
                cache.upload_soon()
            if run.step < run.total_steps:
                # Leave room for one more dispatch: the bound holds when the next step goes out.
                _finish(run, in_flight, limit - 1)
                if run.pace.measured == 1:
                    _warn_if_notice_too_short(run)
                if watcher.should_stop(run.step):
                    run.preempted = watcher.reason or "preemption notice"
                    for hook in run.hooks:
                        hook.on_preempt(run)  # the checkpoint hook saves synchronously here
                    break
        _finish(run, in_flight, 0)

    def _export(self, config, model, tokenizer, source, paths, run: Run) -> None:
        from reactor_core.formats import hf
        from reactor_core.lora import peft_format

        if config.lora.enabled:
            base = source if isinstance(source, str) else config.model.name
            run.outputs["adapter"] = peft_format.save_adapter(model, config.lora, paths["adapter"], base_model=base)
            if config.run.export_merged:
                run.outputs["merged"] = peft_format.save_merged(model, paths["merged"], tokenizer=tokenizer)
        else:
            hf.save_hf_dir(model, paths["model"])
            tokenizer.save_pretrained(paths["model"])
            run.outputs["model"] = paths["model"]


def _finish(run: Run, in_flight: collections.deque, keep: int) -> None:
    """Waits for the oldest steps in flight until `keep` are left; each one finished goes to the hooks."""
    while len(in_flight) > keep:
        step, metrics, tokens = in_flight.popleft()
        jax.block_until_ready(metrics)  # the step's last outputs: the whole step is done
        run.pace.finish(step, time.perf_counter(), tokens, run.paused_s)
        for hook in run.hooks:
            hook.on_step_finished(run, step)


def _report_first_step(run: Run, compiles) -> None:
    pace = run.pace
    compiled, cached = compiles.compiled("train_step"), compiles.cache_hits("train_step")
    how = (
        f"compiled in {compiles.seconds('train_step'):.1f}s"
        if compiled
        else ("read from the compilation cache" if cached else "already compiled")
    )
    log.info("first step (%d): %.1fs, the train step %s", pace.finished, pace.first_step_s, how)


def _warn_if_notice_too_short(run: Run) -> None:
    """After the first measured step: what the whole run will take, and whether a preemption
    save still lands inside the machine's notice."""
    pace = run.pace
    remaining = pace.eta_s
    elapsed = time.perf_counter() - run.started - run.paused_s
    log.info(
        "measured %.2fs per step (%s tokens/s): this run's %d steps take about %s in all, %s to go; "
        "a preemption notice waits for at most %d step(s) plus the save",
        pace.step_s,
        f"{pace.tokens_per_s:,.0f}",
        run.total_steps - pace.start_step,
        format_duration(elapsed + remaining),
        format_duration(remaining),
        run.config.run.steps_in_flight,
    )
    advice = environment.notice_advice(pace.step_s, run.config, environment.preemption_notice_s())
    if advice:
        log.warning(advice)


def check_batch_fits_mesh(config: TrainingConfig, num_devices: int) -> None:
    """The batch is split over data x fsdp: batch_size must divide by it (before any loading)."""
    sizes = config.mesh.resolve(num_devices)
    ways = sizes["data"] * sizes["fsdp"]
    if config.data.batch_size % ways:
        raise ValueError(
            f"TrainingConfig.data.batch_size={config.data.batch_size} is not divisible by data x fsdp = {ways} "
            f"of the mesh {config.mesh} on {num_devices} devices ({sizes}): use a batch_size that is a multiple "
            f"of {ways}, or another --mesh"
        )


def _stack(batches: list) -> dict:
    """A (A, B, T) batch from A micro-batches (nested dicts of arrays)."""
    if isinstance(batches[0], dict):
        return {k: _stack([b[k] for b in batches]) for k in batches[0]}
    return np.stack(batches)


def _count_rows(one_pass) -> int:
    """Real (non-padding) rows of one pass, for turning epochs into steps."""
    rows = 0
    for batch in one_pass:
        rows += int((batch["segment_ids"] > 0).any(axis=-1).sum())
    return rows
