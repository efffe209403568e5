"""Command line: `tokprune <command>`; each command is also a console script `tokprune-<command>`."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import click
import numpy as np

from onnx_tokprune.errors import InvalidTextError, ParityError, TokpruneError
from onnx_tokprune.io import check_output_dir, check_output_file
from onnx_tokprune.training.resume import DEFAULT_SAVE_STEPS

# Fast tokenizers warn (and can deadlock) when the process later forks, e.g. for data loaders.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def user_errors(func):
    """Turn the package's errors (errors.TokpruneError), and usage errors raised in a command's body
    (which click would print after the usage text), into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.UsageError as e:
            raise click.ClickException(e.format_message()) from None
        except ParityError as e:
            raise click.ClickException(f"parity failed: {type(e).__name__}: {e}") from None
        except TokpruneError as e:
            raise click.ClickException(str(e).splitlines()[0]) from None

    return wrapper


def _pin_torch_threads() -> int:
    """PyTorch's intra-op threads set to the CPUs this process can really use (runtime.cpus); returns that count."""
    import torch

    from onnx_tokprune.runtime.cpus import available_cpus

    threads = available_cpus()
    torch.set_num_threads(threads)
    return threads


def _layers(value: str | None, option: str = "--layers") -> list[int] | None:
    """Comma-separated layer indices, each once."""
    if not value:
        return None
    try:
        layers = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give layer indices separated by commas, e.g. 1,2,3", param_hint=option) from None
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise click.BadParameter(f"{value!r} lists layer(s) {repeated} more than once: give each layer once", param_hint=option)
    return layers


def _batch_sizes(value: str) -> list[int]:
    """Comma-separated batch sizes, each at least 1."""
    try:
        sizes = [int(v) for v in value.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: give batch sizes of at least 1 separated by commas, e.g. 1,8", param_hint="--batch-sizes")
    return sizes


def _at_least(value: int, minimum: int, option: str, meaning: str = "") -> None:
    if value < minimum:
        raise click.BadParameter(f"must be at least {minimum}{meaning}, got {value}", param_hint=option)


def _kernel_option(func):
    return click.option(
        "--kernel/--no-kernel", "kernel", default=None,
        help="Run TokenPrune with the compiled kernel (tokprune build-kernel), or with the portable ONNX functions. Default: the kernel when built.",
    )(func)


def _kernel_choice(kernel: bool | None):
    """--kernel: the built library (one line when there is none); --no-kernel: False; unset: None (auto)."""
    if kernel is None or kernel is False:
        return kernel
    from onnx_tokprune.runtime.kernel import find_kernel

    library = find_kernel()
    if library is None:
        raise click.ClickException("--kernel: no compiled TokenPrune kernel found: build it with `tokprune build-kernel`, or leave out --kernel")
    return library


def _write_json(path: str, data) -> None:
    from onnx_tokprune.config import write_json_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, data)


def _data_options(files: str):
    """The data options every data command shares, gathered into one `source` (data.source.DataSource)
    argument. `files`: "texts" (--data FILE, labels unused), "eval" (--data FILE, labelled), "train"
    (--train-file / --validation-file, --problem-type), or "bench" (--data FILE, repeatable)."""

    def decorate(func):
        @functools.wraps(func)
        @user_errors
        def wrapper(*args, **kwargs):
            from onnx_tokprune.data.source import DataSource

            names = kwargs.pop("column_names")
            kwargs["source"] = DataSource(
                task=kwargs.pop("task"), data_dir=kwargs.pop("data_dir"), dataset=kwargs.pop("dataset"),
                dataset_config=kwargs.pop("dataset_config"), text_column=kwargs.pop("text_column"),
                pair_column=kwargs.pop("text_pair_column"), label_column=kwargs.pop("label_column"),
                column_names=tuple(n.strip() for n in names.split(",")) if names else None,
            )
            kwargs["source"].check()  # before a model is loaded
            return func(*args, **kwargs)

        options = [
            click.option("--task", help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte): alone, its files under --data-dir "
                         "(or `glue` from the hub); with files, it names their columns, labels and metrics."),
            click.option("--data-dir", default=lambda: os.environ.get("TOKPRUNE_DATA"), show_default="$TOKPRUNE_DATA",
                         help="Local GLUE directory (<Task>/train.tsv, dev.tsv) for --task."),
            click.option("--dataset", help="A Hugging Face hub dataset by name (online), e.g. imdb; its train/validation splits."),
            click.option("--dataset-config", help="The hub dataset's configuration name."),
            click.option("--text-column", help="Column holding the text (default: sentence1/sentence2, question/sentence, text, sentence, ...)."),
            click.option("--text-pair-column", help="Column holding the second text of a pair."),
            click.option("--label-column", help="Column holding the label (default: label, labels or score)."),
            click.option("--column-names", help="Comma-separated names of a headerless .csv/.tsv file's columns, e.g. text,label."),
        ]
        if files == "train":
            options += [
                click.option("--train-file", type=click.Path(), help="Training data: .csv, .tsv, .json, .jsonl or .parquet."),
                click.option("--validation-file", type=click.Path(), help="Validation data, same formats."),
                click.option("--problem-type", type=click.Choice(["classification", "regression"]),
                             help="Default: regression for float labels, else classification (fine-tuning only)."),
                click.option("--metric", help="Main metric to report (default by task type: binary f1, multi-class accuracy, regression pearson)."),
            ]
        elif files == "eval":
            options += [
                click.option("--data", "data_file", type=click.Path(), help="Labelled data: .csv, .tsv, .json, .jsonl or .parquet (default: --task's dev set)."),
                click.option("--metric", help="Main metric to report (default by task type: binary f1, multi-class accuracy, regression pearson)."),
            ]
        elif files == "bench":
            options.append(click.option("--data", "data_files", multiple=True, type=click.Path(),
                                        help="Texts: .tsv (GLUE or one per line), .txt, .csv, .json, .jsonl, .parquet; repeat for several files."))
        else:
            options.append(click.option("--data", "data_file", type=click.Path(),
                                        help="Texts: .tsv (GLUE or one per line), .txt, .csv, .json, .jsonl, .parquet (labels unused)."))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def _source_args(source) -> list[str]:
    """The data options of `source` as command-line arguments (recorded in reports)."""
    pairs = (("--task", source.task), ("--dataset", source.dataset), ("--dataset-config", source.dataset_config),
             ("--text-column", source.text_column), ("--text-pair-column", source.pair_column),
             ("--label-column", source.label_column), ("--column-names", ",".join(source.column_names) if source.column_names else None))
    return [a for option, value in pairs if value for a in (option, str(value))]


def _texts(source, data_file, split: str, limit: int | None):
    """The examples of a texts-only command: --data FILE, or --task / --dataset's `split`."""
    from onnx_tokprune.data.source import load_split

    return load_split(source, data_file, split, need_labels=False, limit=limit).examples


BOTH_HEADS = ("sequence", "span")
"""What the commands that run any PrunedEncoder take: sequence classifiers and span (QA) models."""


def _qa_rows(model, hf: dict, source, data_file, split: str, limit: int | None, local: bool = True):
    """The token rows of every window of a QA file (or hub --dataset split), with the tokenizer and
    window of a span checkpoint (its recorded max_length / stride)."""
    from onnx_tokprune.data.squad import load_qa
    from onnx_tokprune.modeling import load_tokenizer
    from onnx_tokprune.runtime.qa import QAWindows, window_settings

    data = load_qa(data_file, source.dataset, source.dataset_config, split, limit)
    windows = QAWindows(load_tokenizer(model, local=local).backend_tokenizer, *window_settings(hf))
    return [(w.ids, w.type_ids) for w in windows.encode(data.questions, data.contexts)]


PROTECT_ON_QA = "--protect-second-text applies to pair classifiers: a QA model's second text is its context"


@click.group()
def main() -> None:
    """Token pruning that physically removes tokens: calibrate, export, check parity, benchmark."""


@main.command("calibrate")
@click.option("--model", required=True, help="HF checkpoint directory (or hub name when online).")
@_data_options("texts")
@click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write (HF files + tokprune.json).")
@click.option("--keep", type=float, help="Fraction of non-CLS tokens left after the last pruning layer.")
@click.option("--flops", "target_flops", type=float, help="Target relative FLOPs instead of --keep.")
@click.option("--rule", type=click.Choice(["threshold", "top_k"]), default="threshold", show_default=True)
@click.option("--layers", help="Pruning layers, comma-separated (default: all but the first and last).")
@click.option("--schedule", type=click.Choice(["linear", "geometric"]), default="linear", show_default=True, help="How the kept fraction falls over the pruning layers.")
@click.option("--normalizer", type=click.Choice(["fixed", "length"]), default="fixed", show_default=True)
@click.option("--normalizer-length", type=int, default=128, show_default=True, help="N of the fixed score normaliser.")
@click.option("--samples", type=int, default=256, show_default=True, help="Calibration sentences read from --data.")
@click.option("--num-labels", type=int, default=2, show_default=True, help="Classes, when the checkpoint has no head yet.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for a newly initialised head.")
@click.option("--protect-second-text", is_flag=True, help="Every layer keeps each pair's second text (token type 1, e.g. an NLI hypothesis), in PyTorch and in the exported graph; the other tokens meet --keep / --flops (protect 'second_text' in tokprune.json).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@user_errors
def calibrate_command(model, source, data_file, output, keep, target_flops, rule, layers, schedule, normalizer, normalizer_length, samples, num_labels, seed, protect_second_text, force):
    """Choose per-layer thresholds (or top-k ratios) from score statistics; no training."""
    if (keep is None) == (target_flops is None):
        raise click.UsageError("give exactly one of --keep or --flops")
    for name, value in (("keep", keep), ("target FLOPs", target_flops)):
        if value is not None and not 0 < value <= 1:
            raise click.ClickException(f"{name} must be in (0, 1], got {value}")
    _at_least(samples, 1, "--samples")
    _at_least(num_labels, 1, "--num-labels")
    layer_list = _layers(layers)
    check_output_dir(Path(output), force)
    import torch

    from onnx_tokprune.artifact import head_kind
    from onnx_tokprune.calibrate import calibrate
    from onnx_tokprune.io import atomic_output_dir
    from onnx_tokprune.modeling import check_checkpoint, load_classifier, load_tokenizer
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    hf = check_checkpoint(model, "if_missing", local=False, kinds=BOTH_HEADS)
    span = head_kind(hf.get("architectures")) == "span"
    if span and protect_second_text:
        raise click.UsageError(PROTECT_ON_QA)
    torch.manual_seed(seed)
    if span:
        qa = _qa_rows(model, hf, source, data_file, "train", samples, local=False)
    else:
        examples = _texts(source, data_file, "train", samples)
    hf_model = load_classifier(model, "if_missing", num_labels=num_labels, local=False, kinds=BOTH_HEADS)
    tokenizer = load_tokenizer(model, local=False)
    text_encoder = TextEncoder(tokenizer.backend_tokenizer, hf_model.config.max_position_embeddings)
    result = calibrate(
        hf_model,
        text_encoder,
        None if span else examples,
        keep=keep,
        target_flops=target_flops,
        rule=rule,
        layers=layer_list,
        score_normalizer=normalizer,
        normalizer_length=normalizer_length,
        schedule=schedule,
        rows=qa if span else None,
        protect="second_text" if protect_second_text else None,
    )
    result.config.provenance.update({"model": str(model), "data": source.describe(data_file, "train")})
    with atomic_output_dir(output, force) as tmp:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result.config.save(tmp)
    protected = " (second texts kept)" if result.config.protect else ""
    click.echo(f"wrote {output}: {result.config.rule} at layers {list(result.config.pruning_layers)}{protected}")
    for layer, fraction in result.kept_fraction.items():
        click.echo(f"  layer {layer}: keeps {100 * fraction:.1f}% of non-CLS tokens")
    click.echo(f"  relative FLOPs on the calibration data: {result.relative_flops:.3f}")


@main.command("export")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint directory with tokprune.json.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or 18).")
@click.option("--output", type=click.Path(), help="Artifact directory (default: <model>-onnx).")
@click.option("--unpruned", is_flag=True, help="Export without TokenPrune (the baseline for benchmarks).")
@click.option("--int8", is_flag=True, help="Dynamic INT8 quantization of the linear layers (TokenPrune and scores stay fp32).")
@click.option(
    "--int8-setting", type=click.Choice(["portable", "vnni"]), default="portable", show_default=True,
    help="portable: 7-bit weights, the same logits on every x86-64 CPU; vnni: 8-bit weights, correct only on CPUs with AVX-VNNI/AVX512-VNNI.",
)
@click.option("--optimize", is_flag=True, help="Apply onnxruntime's transformer fusions (Attention on every layer that does not score, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization) held to the architecture's fused-op counts; the counts go in the manifest.")
@click.option("--cls-only", is_flag=True, help="Run the last layer for the CLS row only (sequence classifiers whose last layer does not prune; exact); the pass and its count go in the manifest.")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@user_errors
def export_command(model, opset, output, unpruned, int8, int8_setting, optimize, cls_only, force):
    """Export a pruned checkpoint to an ONNX artifact whose TokenPrune nodes remove tokens."""
    from onnx_tokprune.export.exporter import check_opset, export_artifact
    from onnx_tokprune.modeling import check_checkpoint, check_tokenizer_files, load_pruned, wrap

    check_opset(opset)
    check_checkpoint(model, "trained", kinds=BOTH_HEADS)
    check_tokenizer_files(model, fast=True)
    output = output or f"{str(model).rstrip('/')}{'-unpruned' if unpruned else ''}{'-int8' if int8 else ''}-onnx"
    check_output_dir(Path(output), force)
    encoder = load_pruned(model, "drop", require_config=not unpruned, kinds=BOTH_HEADS)
    if unpruned:
        encoder = wrap(encoder.model, None, "drop")
    if int8_setting != "portable" and not int8:
        raise click.BadParameter("only applies with --int8", param_hint="--int8-setting")
    export = export_artifact(encoder, model, output, opset, force, int8=int8, optimize=optimize, int8_setting=int8_setting, cls_only=cls_only).export
    click.echo(f"wrote {output}: opset {opset}, {export.token_prune_nodes} TokenPrune node(s) at layers {list(export.pruning_layers)}")
    for done in export.passes:
        click.echo(f"  pass {done.name}: {done.describe()}")
    if export.int8 is not None:
        counts = export.int8
        done = ", ".join(f"{k.removeprefix('quantized_')} {v}" for k, v in counts.items() if k.startswith("quantized_"))
        kept = f", {counts['fp32_matmuls']} activation MatMul(s) (attention) kept fp32" if "fp32_matmuls" in counts else ""
        bits = "7-bit" if counts["reduce_range"] else "8-bit"
        click.echo(f"  INT8 ({counts['setting']}: {bits} QInt8 weights{', per channel' if counts['per_channel'] else ''}; correct on {counts['correct_on']}): quantized {done}{kept}")


@main.command("parity")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint directory (PyTorch side).")
@click.option("--artifact", required=True, type=click.Path(), help="Artifact directory (onnxruntime side).")
@_data_options("texts")
@click.option("--samples", type=int, default=500, show_default=True, help="Sentences read from --data (0 = all).")
@click.option("--batch-sizes", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Tolerance on |Δlogit|.")
@click.option("--report", type=click.Path(), help="Also write the report as JSON here.")
@_kernel_option
@user_errors
def parity_command(model, artifact, source, data_file, samples, batch_sizes, atol, report, kernel):
    """Check that the artifact computes what the PyTorch drop-mode model computes."""
    from onnx_tokprune.modeling import check_checkpoint, load_pruned
    from onnx_tokprune.parity import check_parity

    _at_least(samples, 0, "--samples", " (0 = all)")
    sizes = _batch_sizes(batch_sizes)
    if not atol >= 0:
        raise click.BadParameter(f"must be a number >= 0, got {atol}", param_hint="--atol")
    if report:
        check_output_file(report)
    kernel_library = _kernel_choice(kernel)
    from onnx_tokprune.artifact import head_kind

    hf = check_checkpoint(model, "trained", tokenizer=False, kinds=BOTH_HEADS)
    span = head_kind(hf.get("architectures")) == "span"
    rows = _qa_rows(model, hf, source, data_file, "validation", samples or None) if span else None
    examples = None if span else _texts(source, data_file, "validation", samples or None)
    from onnx_tokprune.runtime.session import PrunedSession

    # PyTorch and onnxruntime take turns: both on the CPUs really available, neither spinning while the other runs
    session = PrunedSession(artifact, threads=_pin_torch_threads(), kernel_library=kernel_library, spinning=False)
    if session.head != ("span" if span else "sequence"):
        raise click.ClickException(f"{model} is a {'span' if span else 'sequence'} model but {artifact} a {session.head} one: pass the artifact exported from it")
    if not span:
        session.text_encoder.token_ids(examples)
    encoder = load_pruned(model, "drop", kinds=BOTH_HEADS)
    if session.manifest.export.cls_only_last:
        encoder.cls_only = True  # the artifact's CLS-only last layer; mask mode keeps the full layer
    result = check_parity(encoder, session, examples, sizes, atol, rows=rows)
    click.echo(result.table())
    if report:
        _write_json(report, result.to_json())
    result.check()
    what = f"{len(rows)} QA windows" if span else f"{len(examples)} sentences"
    click.echo(f"parity OK on {what} (atol {atol:g})")


@main.command("bench")
@click.option("--artifact", required=True, type=click.Path(), help="Pruned fp32 artifact directory (tokprune-export).")
@_data_options("bench")
@click.option("--model", "checkpoint", type=click.Path(), help="The artifact's checkpoint (default: the one its manifest names).")
@click.option("--samples", type=int, default=200, show_default=True, help="Sentences (a QA artifact: questions) per file.")
@click.option("--threads", type=int, default=2, show_default=True, help="Intra-op threads (onnxruntime and PyTorch).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Runs per input (median taken).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Batch of the throughput measurement.")
@click.option("--output", type=click.Path(), help="Directory for bench.json, bench.md, bench.png (default: <artifact>-bench).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@_kernel_option
@user_errors
def bench_command(artifact, source, data_files, checkpoint, samples, threads, repeats, batch_size, output, force, kernel):
    """Pruned vs unpruned (onnxruntime-optimized fp32 and INT8) vs PyTorch eager: batch 1 and batch 8."""
    import shlex

    from onnx_tokprune.bench.suite import environment_line, markdown, plot, run_bench, to_json
    from onnx_tokprune.config import write_json_atomic
    from onnx_tokprune.io import atomic_output_dir

    for name, value in (("samples", samples), ("threads", threads), ("repeats", repeats), ("batch-size", batch_size)):
        _at_least(value, 1, f"--{name}")
    kernel_library = _kernel_choice(kernel)
    output = Path(output or f"{str(artifact).rstrip('/')}-bench")
    check_output_dir(output, force)
    from onnx_tokprune.artifact import read_artifact

    found = read_artifact(artifact)
    if found.manifest.export.head == "span":
        data = [(Path(f).stem if f else source.describe(None, "validation"), _qa_rows(artifact, found.hf_config, source, f, "validation", samples))
                for f in (data_files or [None])]
    elif data_files:
        names = [Path(f).parent.name or Path(f).stem for f in data_files]
        if len(set(names)) < len(names):  # files of one directory: named by file
            names = [Path(f).stem for f in data_files]
        data = [(name, _texts(source, f, "validation", samples)) for name, f in zip(names, data_files)]
    else:
        data = [(source.describe(None, "validation"), _texts(source, None, "validation", samples))]
    report = run_bench(artifact, data, checkpoint, threads, repeats, batch_size, kernel_library)
    args = ["tokprune-bench", "--artifact", str(artifact), *(a for f in data_files for a in ("--data", str(f))), *_source_args(source)]
    args += ["--model", str(checkpoint)] if checkpoint else []
    args += [f"--samples={samples}", f"--threads={threads}", f"--repeats={repeats}", f"--batch-size={batch_size}"]
    args += [] if kernel is None else ["--kernel" if kernel else "--no-kernel"]
    report.command = shlex.join(args)
    click.echo(environment_line(report))
    table = markdown(report)
    png = None
    with atomic_output_dir(output, force) as tmp:
        write_json_atomic(tmp / "bench.json", to_json(report))
        (tmp / "bench.md").write_text(table + "\n")
        try:
            plot(report, tmp / "bench.png")
            png = "bench.png"
        except ImportError:
            pass
    click.echo(table)
    click.echo(f"wrote {output}/bench.json, bench.md" + (f", {png}" if png else ""))
    if png is None:
        click.echo("note: bench.png not written: matplotlib is not installed (pip install matplotlib gives the PNG)", err=True)


def _recipe_defaults(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager --recipe: a JSON file of option defaults (keys = option names with '_'); flags still win."""
    if value:
        try:
            data = json.loads(Path(value).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise click.BadParameter(f"cannot read recipe {value}: {e}") from None
        known = {p.name for p in ctx.command.params}
        unknown = set(data) - known - {"comment"}
        if unknown:
            raise click.BadParameter(f"recipe {value} has unknown option(s) {sorted(unknown)}")
        ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in data.items() if k != "comment"}}
    return value


def _recipe_option(func):
    return click.option(
        "--recipe", type=click.Path(), is_eager=True, expose_value=False, callback=_recipe_defaults,
        help="JSON file of option defaults (models/*.json); options given on the command line win.",
    )(func)


def _train_options(func):
    for option in reversed([
        click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write."),
        click.option("--max-train-samples", type=int, help="Seeded random subset of the training set."),
        click.option("--max-length", type=int, default=128, show_default=True, help="Training truncation length."),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option(
            "--group-by-length", is_flag=True,
            help="Batch inputs of similar length (less padding, faster on long-tailed data such as RTE; batches stay shuffled).",
        ),
        click.option("--seed", type=int, default=42, show_default=True),
        click.option("--force", is_flag=True, help="Replace --output if it exists; start over instead of resuming a different interrupted run."),
        _save_steps_option,
    ]):
        func = option(func)
    return _data_options("train")(_recipe_option(func))


_save_steps_option = click.option(
    "--save-steps", type=int, default=DEFAULT_SAVE_STEPS, show_default=True,
    help="Keep the training state in OUTPUT.resume every N optimizer steps; rerunning the same command resumes there (0 = keep none).",
)


def _training_input(source, train_file, validation_file, problem_type, metric):
    """The data of a training command; one line when none is given."""
    from onnx_tokprune.training.common import TrainingInput

    if train_file is None and source.task is None and source.dataset is None:
        raise click.UsageError("give the training data: --train-file and --validation-file, a GLUE --task, or a hub --dataset")
    if source.task is not None and train_file is None and validation_file is not None:
        raise click.UsageError("--validation-file needs --train-file (with --task alone both come from the task)")
    return TrainingInput(source, train_file, validation_file, problem_type, metric)


@main.group("train")
def train_group() -> None:
    """Fine-tune a baseline, or train a pruning method (LTP, ToP)."""


@train_group.command("finetune")
@click.option("--model", required=True, help="Pretrained checkpoint directory or hub name.")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--num-layers", type=int, help="Keep only the first N encoder layers (the fewer-layers baseline).")
@_train_options
@user_errors
def finetune_command(model, source, train_file, validation_file, problem_type, metric, output, max_train_samples, max_length, batch_size, group_by_length, seed, force, save_steps, epochs, lr, num_layers):
    """Baseline fine-tuning (HF Trainer): the teacher and starting point for LTP and ToP."""
    from onnx_tokprune.modeling import check_checkpoint
    from onnx_tokprune.training.common import TrainSettings
    from onnx_tokprune.training.finetune import finetune

    data = _training_input(source, train_file, validation_file, problem_type, metric)
    check_output_dir(Path(output), force)
    check_checkpoint(model, "new", local=False)
    settings = TrainSettings(epochs=epochs, learning_rate=lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length)
    metrics = finetune(model, data, output, settings, max_train_samples, max_length, force, num_layers, save_steps)
    click.echo(f"wrote {output}; validation: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items()))


def _qa_options(func):
    """The QA data options: SQuAD-format files or a hub dataset, and the window."""
    for option in reversed([
        click.option("--train-file", type=click.Path(), help="SQuAD-format JSON (or .jsonl/.parquet with question, context, answers)."),
        click.option("--validation-file", type=click.Path(), help="Evaluation data, same formats."),
        click.option("--dataset", help="A hub QA dataset by name (online), e.g. squad: its train and validation splits."),
        click.option("--dataset-config", help="The hub dataset's configuration name."),
        click.option("--max-length", type=int, help="Window length in tokens (default: the model's recorded window, else 384)."),
        click.option("--stride", type=int, help="Tokens shared by neighbouring windows of a long context (default 128)."),
    ]):
        func = option(func)
    return func


def _qa_data(train_file, validation_file, dataset, dataset_config, max_length, stride, config: dict, need_train: bool = True):
    from onnx_tokprune.data.squad import load_qa
    from onnx_tokprune.runtime.qa import window_settings
    from onnx_tokprune.training.qa import QAData

    if (train_file is None or validation_file is None) and dataset is None:
        raise click.UsageError("give the QA data: --train-file and --validation-file (SQuAD format), or --dataset squad (online)")
    length, stride = window_settings(config, max_length, stride)
    if not 0 <= stride < length:
        raise click.BadParameter(f"must be in [0, {length}) for windows of {length} tokens, got {stride}", param_hint="--stride")
    train = load_qa(train_file, dataset, dataset_config, "train") if need_train else None
    validation = load_qa(validation_file, dataset, dataset_config, "validation")
    return QAData(train, validation, length, stride)


@train_group.command("finetune-qa")
@click.option("--model", required=True, help="Pretrained checkpoint directory or hub name (its span head is new).")
@_qa_options
@click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write.")
@click.option("--epochs", type=float, default=2.0, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--max-train-samples", type=int, help="The first N training questions.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--force", is_flag=True, help="Replace --output if it exists; start over instead of resuming a different interrupted run.")
@_save_steps_option
@_recipe_option
@user_errors
def finetune_qa_command(model, train_file, validation_file, dataset, dataset_config, max_length, stride, output, epochs, lr, batch_size, max_train_samples, seed, force, save_steps):
    """Extractive QA fine-tuning (span head, HF Trainer); reports SQuAD exact match and F1."""
    from onnx_tokprune.modeling import check_checkpoint
    from onnx_tokprune.training.common import TrainSettings
    from onnx_tokprune.training.qa import finetune_qa

    check_output_dir(Path(output), force)
    hf = check_checkpoint(model, "new", local=False, kinds=("span",))
    data = _qa_data(train_file, validation_file, dataset, dataset_config, max_length, stride, hf)
    settings = TrainSettings(epochs=epochs, learning_rate=lr, batch_size=batch_size, seed=seed)
    metrics = finetune_qa(model, data, output, settings, max_train_samples, force, local=False, save_steps=save_steps)
    click.echo(f"wrote {output}; validation ({len(data.validation)} questions): exact match {metrics['exact_match']:.2f}, F1 {metrics['f1']:.2f}")


def _stride_option(func):
    return click.option("--stride", type=int, help="Span (QA) models: tokens shared by neighbouring windows (default: the model's recorded stride).")(func)


def _pruning_data(model, source, train_file, validation_file, problem_type, metric, max_length, stride):
    """(training data, fine-tuned checkpoint's config) of `tokprune-train ltp|top`: a sequence
    classifier trains on labelled texts; a span (QA) model on QA data (SQuAD-format files or a hub
    QA --dataset), in windows of its recorded length unless --max-length / --stride say otherwise."""
    from onnx_tokprune.artifact import head_kind
    from onnx_tokprune.modeling import check_checkpoint

    hf = check_checkpoint(model, "trained", kinds=BOTH_HEADS)
    if head_kind(hf.get("architectures")) != "span":
        if stride is not None:
            raise click.UsageError(f"--stride is for span (QA) models; {model} is a sequence classifier")
        return _training_input(source, train_file, validation_file, problem_type, metric), hf
    if source.task is not None or problem_type is not None or metric is not None:
        raise click.UsageError(f"{model} is a span (QA) model: give QA data (--train-file/--validation-file in SQuAD format, or --dataset squad), not --task, --problem-type or --metric")
    given = click.get_current_context().get_parameter_source("max_length") != click.core.ParameterSource.DEFAULT
    return _qa_data(train_file, validation_file, source.dataset, source.dataset_config, max_length if given else None, stride, hf), hf


def _metric_line(metrics: dict[str, float], span: bool) -> str:
    """Dev metrics as percentages (QA scores already are)."""
    return ", ".join(f"{k} {(v if span else 100 * v):.2f}" for k, v in metrics.items())


@train_group.command("ltp")
@click.option("--model", required=True, type=click.Path(), help="Fine-tuned checkpoint directory for the task.")
@click.option("--lambda", "lam", type=float, default=0.15, show_default=True, help="Weight of the soft-mask regulariser.")
@click.option("--temperature", type=float, default=1e-3, show_default=True, help="Soft-mask temperature T.")
@click.option("--threshold-lr", type=float, default=1e-4, show_default=True, help="Learning rate of the thresholds.")
@click.option("--final-threshold", type=float, default=0.01, show_default=True, help="Initial threshold of the last layer.")
@click.option("--init-flops", type=float, help="Start from thresholds calibrated to this relative FLOPs instead.")
@click.option("--layers", help="Pruning layers, comma-separated (default: every layer, as LTP); the others keep fused Attention.")
@click.option("--soft-epochs", type=float, default=1.0, show_default=True)
@click.option("--soft-lr", type=float, default=2e-5, show_default=True)
@click.option("--hard-epochs", type=float, default=1.0, show_default=True)
@click.option("--hard-lr", type=float, default=1e-5, show_default=True)
@click.option("--distill/--no-distill", default=False, show_default=True, help="Both stages distil the --model checkpoint's logits (frozen teacher; KL at temperature 2) instead of the task loss, as ToP trains.")
@click.option("--ce-weight", type=float, default=0.0, show_default=True, help="With --distill: weight of the task loss beside distillation.")
@click.option("--protect-second-text/--no-protect-second-text", default=False, show_default=True, help="Every layer keeps each pair's second text (token type 1, e.g. an NLI hypothesis) in training and in the result (protect 'second_text' in tokprune.json).")
@_stride_option
@_train_options
@user_errors
def ltp_command(model, source, train_file, validation_file, problem_type, metric, output, max_train_samples, max_length, batch_size, group_by_length, seed, force, save_steps, lam, temperature, threshold_lr, final_threshold, init_flops, layers, soft_epochs, soft_lr, hard_epochs, hard_lr, distill, ce_weight, protect_second_text, stride):
    """Learned Token Pruning: soft thresholds, then a hard stage; writes a checkpoint with tokprune.json.
    A span (QA) model trains with the span loss on QA data (removed tokens restored for its head)."""
    from onnx_tokprune.architectures import num_layers
    from onnx_tokprune.training.common import TrainSettings
    from onnx_tokprune.training.ltp import LTPSettings, train_ltp
    from onnx_tokprune.training.qa import QAData

    layer_list = _layers(layers)
    data, hf = _pruning_data(model, source, train_file, validation_file, problem_type, metric, max_length, stride)
    if protect_second_text and isinstance(data, QAData):
        raise click.UsageError(PROTECT_ON_QA)
    check_output_dir(Path(output), force)
    settings = LTPSettings(
        lam=lam, temperature=temperature, threshold_lr=threshold_lr, final_threshold=final_threshold, init_flops=init_flops,
        layers=tuple(layer_list) if layer_list else None, distill=distill, ce_weight=ce_weight,
        protect="second_text" if protect_second_text else None,
        soft=TrainSettings(epochs=soft_epochs, learning_rate=soft_lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length),
        hard=TrainSettings(epochs=hard_epochs, learning_rate=hard_lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length),
    )
    settings.check(num_layers(hf))
    config, metrics = train_ltp(model, data, output, settings, max_train_samples, max_length, force, save_steps)
    thresholds = ", ".join(f"L{r.layer}: {r.threshold:.4g}" for r in config.layers)
    click.echo(f"wrote {output}; thresholds {thresholds}; dev (drop mode): " + _metric_line(metrics, isinstance(data, QAData)))


@train_group.command("top")
@click.option("--model", required=True, type=click.Path(), help="Fine-tuned checkpoint directory: the student's start and the teacher.")
@click.option("--target-flops", type=float, default=0.5, show_default=True, help="Relative FLOPs to reach (0-1).")
@click.option("--bins", type=int, default=25, show_default=True, help="Rank bins per pruning layer.")
@click.option("--layers", help="Candidate pruning layers, comma-separated (default: all but the first and last).")
@click.option("--rank-layers", help="Layers that learn the teacher's ranking (default: candidates in the first half).")
@click.option("--top-k", type=int, default=20, show_default=True, help="Teacher tokens ranked by the distillation loss.")
@click.option("--rank-weight", type=float, default=1e-3, show_default=True, help="Weight of the ranking distillation loss.")
@click.option("--ce-weight", type=float, default=0.0, show_default=True, help="Weight of cross-entropy on labels beside distillation.")
@click.option("--reg-lr", type=float, default=0.02, show_default=True, help="Learning rate of the gates and Lagrange multipliers.")
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True, help="Epochs over which the FLOPs target ramps in.")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--lr", type=float, default=2e-5, show_default=True)
@click.option("--match-samples", type=int, default=1024, show_default=True, help="Training inputs on which the binarised gates are matched to the FLOPs target (0 = off).")
@click.option("--hard-epochs", type=float, default=0.0, show_default=True, help="Fine-tuning epochs with the gates fixed (0 = none).")
@click.option("--hard-lr", type=float, default=1e-5, show_default=True)
@click.option("--protect-second-text/--no-protect-second-text", default=False, show_default=True, help="Each pair's second text (token type 1, e.g. an NLI hypothesis) ranks above every other token at each pruning layer, in training and in the result, so it fills the open bins first (protect 'second_text' in tokprune.json).")
@_stride_option
@_train_options
@user_errors
def top_command(model, source, train_file, validation_file, problem_type, metric, output, max_train_samples, max_length, batch_size, group_by_length, seed, force, save_steps, target_flops, bins, layers, rank_layers, top_k, rank_weight, ce_weight, reg_lr, warmup_epochs, epochs, lr, match_samples, hard_epochs, hard_lr, protect_second_text, stride):
    """ToP: ranking distillation + L0 gates over rank bins and layers under a FLOPs constraint.
    A span (QA) model distils the teacher's start/end distributions on QA data."""
    from onnx_tokprune.architectures import num_layers
    from onnx_tokprune.training.common import TrainSettings
    from onnx_tokprune.training.qa import QAData
    from onnx_tokprune.training.top import ToPSettings, train_top

    layer_list, rank_list = _layers(layers), _layers(rank_layers, "--rank-layers")
    data, hf = _pruning_data(model, source, train_file, validation_file, problem_type, metric, max_length, stride)
    if protect_second_text and isinstance(data, QAData):
        raise click.UsageError(PROTECT_ON_QA)
    check_output_dir(Path(output), force)
    settings = ToPSettings(
        target_flops=target_flops, bins=bins, layers=layer_list, rank_layers=rank_list, top_k=top_k,
        protect="second_text" if protect_second_text else None,
        rank_weight=rank_weight, ce_weight=ce_weight, reg_lr=reg_lr, warmup_epochs=warmup_epochs, match_samples=match_samples,
        train=TrainSettings(epochs=epochs, learning_rate=lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length),
        hard=TrainSettings(epochs=hard_epochs, learning_rate=hard_lr, batch_size=batch_size, seed=seed, group_by_length=group_by_length)
        if hard_epochs > 0 else None,
    )
    settings.check(num_layers(hf))
    config, metrics = train_top(model, data, output, settings, max_train_samples, max_length, force, save_steps)
    kept = ", ".join(f"L{r.layer}: {sum(r.bin_mask)}/{len(r.bin_mask)}" for r in config.layers)
    click.echo(f"wrote {output}; open bins {kept}; dev (drop mode): " + _metric_line(metrics, isinstance(data, QAData)))


@main.command("frontier")
@click.option("--baseline", required=True, type=click.Path(), help="The fine-tuned, unpruned checkpoint: the reference (latency 1, FLOPs 1).")
@click.option("--model", "models", multiple=True, type=click.Path(), help="A pruned checkpoint (calibrated, LTP, ToP) or one fine-tuned with fewer layers (finetune --num-layers); repeat.")
@click.option("--truncate", "truncations", multiple=True, help="Cut the baseline's inputs to N tokens (repeat); 'auto': one N per pruned checkpoint, at its FLOPs.")
@click.option("--truncated", "truncated_models", multiple=True, metavar="CHECKPOINT:N", help="A checkpoint fine-tuned on inputs cut to N tokens (finetune --max-length N), run on inputs cut to N: truncation-aware fine-tuning; repeat.")
@_data_options("eval")
@click.option("--samples", type=int, default=200, show_default=True, help="Inputs timed at batch 1 (the first N of the data).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Runs per input (median taken).")
@click.option("--threads", type=int, default=2, show_default=True, help="Intra-op threads.")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also every point as dynamic INT8 (the portable setting).")
@click.option("--output", required=True, type=click.Path(), help="The frontier's directory: points/, artifacts/, frontier.json, .md, .png. Reused: a point whose inputs are unchanged is not measured again.")
@click.option("--force", is_flag=True, help="Measure every point again.")
@_kernel_option
def frontier_command(baseline, models, truncations, truncated_models, source, data_file, metric, samples, repeats, threads, int8, output, force, kernel):
    """Metric against measured latency and FLOPs: pruned checkpoints beside truncation and fewer layers."""
    from onnx_tokprune.architectures import num_layers
    from onnx_tokprune.config import CONFIG_NAME
    from onnx_tokprune.data.source import load_split
    from onnx_tokprune.flops import EncoderShape
    import shlex

    import torch

    from onnx_tokprune.frontier import (
        BASELINE, TRUNCATION, TRUNCATION_TRAINED, UNPRUNED_METHODS, Frontier, FrontierRun, PointSpec, classify_checkpoint, environment,
        truncation_for_flops, write,
    )
    from onnx_tokprune.modeling import check_checkpoint

    _at_least(samples, 1, "--samples")
    _at_least(repeats, 1, "--repeats")
    _at_least(threads, 1, "--threads")
    lengths = []
    for value in truncations:
        if value != "auto" and not (value.isdigit() and int(value) >= 4):
            raise click.BadParameter(f"{value!r}: give a number of tokens (at least 4) or 'auto'", param_hint="--truncate")
        lengths += [] if value == "auto" else [int(value)]
    cut_models = []
    for value in truncated_models:
        path, _, tokens = value.rpartition(":")
        if not path or not (tokens.isdigit() and int(tokens) >= 4):
            raise click.BadParameter(f"{value!r}: give CHECKPOINT:N, N the tokens it was fine-tuned on (at least 4)", param_hint="--truncated")
        cut_models.append((path, int(tokens)))
    torch.set_num_threads(threads)  # exports and tokenizing run beside the timed sessions: keep to the same cores
    hf = check_checkpoint(baseline, "trained")
    if (Path(baseline) / CONFIG_NAME).is_file():
        raise click.UsageError(f"{baseline} prunes ({CONFIG_NAME}): --baseline is the fine-tuned, unpruned checkpoint; pass pruned ones with --model")
    baseline_layers = num_layers(hf, baseline)
    specs = [PointSpec(BASELINE, BASELINE, baseline)]
    for model in models:
        method, pruned = classify_checkpoint(model, baseline_layers)
        name = Path(model).resolve().name
        if any(s.name == name for s in specs):
            raise click.UsageError(f"two --model directories are named {name}: give each point a distinct directory name")
        specs.append(PointSpec(name, method, str(model), pruned=pruned))
    for model, tokens in cut_models:
        check_checkpoint(model, "trained")
        name = Path(model).resolve().name
        if (Path(model) / CONFIG_NAME).is_file() or any(s.name == name for s in specs):
            raise click.UsageError(f"--truncated {model}: give an unpruned checkpoint whose directory name no other point has")
        specs.append(PointSpec(name, TRUNCATION_TRAINED, str(model), max_tokens=tokens))
    split = load_split(source, data_file, "validation", need_labels=True)
    data_key = " ".join(_source_args(source) + ([str(Path(data_file).resolve())] if data_file else []))
    run = FrontierRun(output, baseline, split, samples, repeats, threads, _kernel_choice(kernel), force, data_key=data_key, metric=metric)
    points = [run.measure(s) for s in specs]
    if "auto" in truncations:
        shape = EncoderShape.from_hf(run.reference_session().artifact.hf_config)
        pruned = [p.relative_flops for p in points if p.method not in UNPRUNED_METHODS]
        lengths += truncation_for_flops(run.lengths(), shape, pruned)
    specs += [PointSpec(f"truncate-{k}", TRUNCATION, baseline, max_tokens=k) for k in sorted(set(lengths))]
    points += [run.measure(s) for s in specs[len(points):]]
    if int8:
        points += [run.measure(PointSpec(**{**s.__dict__, "int8": True})) for s in specs]
    args = ["tokprune", "frontier", "--baseline", str(baseline), *(a for m in models for a in ("--model", str(m)))]
    args += [a for t in truncations for a in ("--truncate", t)] + [a for t in truncated_models for a in ("--truncated", t)] + _source_args(source) + (["--data", str(data_file)] if data_file else [])
    args += [f"--samples={samples}", f"--repeats={repeats}", f"--threads={threads}", "--int8" if int8 else "--no-int8", "--output", str(output)]
    frontier = Frontier(
        task=split.name, metric_name=run.metric_name, baseline=str(baseline), points=points,
        environment=environment(threads, "kernel" if run.reference_session().kernel_library else "function"), command=shlex.join(args),
        floors=run.pruning_floors(),
    )
    for path in write(frontier, output):
        click.echo(f"wrote {path}")
    click.echo(Path(output, "frontier.md").read_text())


@main.command("match-flops")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint written by tokprune-train top.")
@_data_options("texts")
@click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write.")
@click.option("--target-flops", type=float, help="Relative FLOPs to match (default: the training target).")
@click.option("--samples", type=int, default=1024, show_default=True, help="Inputs read from --data.")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@user_errors
def match_flops_command(model, source, data_file, output, target_flops, samples, force):
    """Re-match a ToP checkpoint's binarised gates to a FLOPs target on your inputs (one bin at a time)."""
    from onnx_tokprune.modeling import check_checkpoint
    from onnx_tokprune.training.top import rematch_checkpoint

    _at_least(samples, 1, "--samples")
    check_checkpoint(model, "trained")
    check_output_dir(Path(output), force)
    config, matched = rematch_checkpoint(model, _texts(source, data_file, "train", samples), output, target_flops, force)
    kept = ", ".join(f"L{r.layer}: {sum(r.bin_mask)}/{len(r.bin_mask)}" for r in config.layers)
    click.echo(
        f"wrote {output}; relative FLOPs on {matched['samples']} inputs {matched['binarized_flops']:.3f} -> "
        f"{matched['matched_flops']:.3f} (target {matched['target_flops']}, {matched['bins_changed']} bins changed); open bins {kept}"
    )


@main.group("import")
def import_group() -> None:
    """Convert a released ToP or LTP checkpoint into a checkpoint dir with tokprune.json."""


def _import_options(func):
    for option in reversed([
        click.option("--source", required=True, type=click.Path(), help="The released checkpoint directory."),
        click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write."),
        click.option("--tokenizer", help="Tokenizer directory or hub name, when --source has no tokenizer files."),
        click.option("--force", is_flag=True, help="Replace --output if it exists."),
    ]):
        func = option(func)
    return func


@import_group.command("top")
@_import_options
@click.option("--locations", help="ToP's token_prune_loc, comma-separated (default: the last len(zs) layers).")
@user_errors
def import_top_command(source, output, tokenizer, force, locations):
    """ToP: pytorch_model.bin + zs.pt -> rank_bins config with ToP's bin expression."""
    from onnx_tokprune.importers import import_top

    location_list = _layers(locations, "--locations")
    check_output_dir(Path(output), force)
    config = import_top(source, output, tokenizer, location_list, force)
    kept = ", ".join(f"L{r.layer}: {sum(r.bin_mask)}/{len(r.bin_mask)}" for r in config.layers)
    click.echo(f"wrote {output}; open bins {kept}")


@import_group.command("ltp")
@_import_options
@click.option("--normalizer-length", type=int, default=128, show_default=True, help="LTP's padded training length (score normaliser N).")
@user_errors
def import_ltp_command(source, output, tokenizer, force, normalizer_length):
    """LTP: I-BERT weights + learned thresholds -> RoBERTa checkpoint with a threshold config."""
    from onnx_tokprune.importers import import_ltp

    check_output_dir(Path(output), force)
    config = import_ltp(source, output, tokenizer, normalizer_length, force)
    click.echo(f"wrote {output}; thresholds " + ", ".join(f"L{r.layer}: {r.threshold:.4g}" for r in config.layers))


@main.command("build-kernel")
@click.option("--force", is_flag=True, help="Rebuild even when the library is up to date.")
def build_kernel_command(force):
    """Compile the TokenPrune and ScoredAttention C++ kernels (cached per user in ~/.cache/onnx_tokprune; needs g++ or $CXX); prints the library path.

    Sessions opened by this package register it automatically once built; without it onnxruntime
    runs the op's portable ONNX function.
    """
    from onnx_tokprune.runtime.kernel import build_kernel

    library = build_kernel(force)
    if library is None:
        raise click.ClickException("the TokenPrune kernel could not be built (reason above); the portable ONNX function stays in use")
    click.echo(str(library))


@main.command("show")
@click.option("--artifact", required=True, type=click.Path(), help="Artifact directory (tokprune-export).")
@click.option("--text", help="The sentence to show (or --row of --data).")
@click.option("--pair", "text_pair", help="Second text, for pair tasks.")
@_data_options("texts")
@click.option("--row", type=int, help="With --data (or --task / --dataset): show its row N (1 = the first example).")
@click.option("--summary", is_flag=True, help="With --data (or --task / --dataset) instead of --row: over every example "
              "(the validation split), the share of each text's tokens kept after each pruning layer (pairs: first and second text).")
@click.option("--png", required=True, type=click.Path(), help="PNG to write: one row per pruning layer, one column per token "
              "(--summary: the kept share per layer, one line per text).")
@click.option("--force", is_flag=True, help="Replace --png if it exists.")
@_kernel_option
@user_errors
def show_command(artifact, text, text_pair, source, data_file, row, summary, png, force, kernel):
    """For one sentence: which tokens survive each pruning layer, as text lines and a PNG; with
    --summary, which share of each text survives over a whole dataset."""
    from onnx_tokprune.runtime.session import open_artifact
    from onnx_tokprune.runtime.survival import check_plotting, plot_segment_survival, plot_survival, segment_survival, token_survival
    from onnx_tokprune.runtime.text_encoder import check_text

    from_data = data_file is not None or source.task is not None or source.dataset is not None
    if (text is not None) == from_data:
        raise click.UsageError("give --text, or --data (or --task / --dataset) with --row or --summary")
    if summary and (not from_data or row is not None or text_pair is not None):
        raise click.BadParameter("summarises every example of --data (or --task / --dataset): give that, without --text, --pair or --row", param_hint="--summary")
    if from_data and not summary:
        if row is None:
            raise click.BadParameter("give the row to show with --data, or --summary for every row", param_hint="--row")
        _at_least(row, 1, "--row", " (1 = the first example)")
        examples = _texts(source, data_file, "validation", row)
        if len(examples) < row:
            raise click.BadParameter(f"the data has {len(examples)} example(s), there is no row {row}", param_hint="--row")
        text, text_pair = examples[row - 1].text, examples[row - 1].text_pair
    elif row is not None:
        raise click.BadParameter("only applies with --data", param_hint="--row")
    for option, value in (("--text", text), ("--pair", text_pair)):
        if value is not None:
            try:
                check_text(value, option)
            except InvalidTextError as e:
                raise click.BadParameter(str(e).removeprefix(f"{option} "), param_hint=option) from None
    check_output_file(png)
    if Path(png).exists() and not force:
        raise click.ClickException(f"{png} already exists: pass --force to replace it, or choose another --png")
    try:
        check_plotting()
    except ImportError as e:
        raise click.ClickException(str(e).splitlines()[0]) from None
    if summary:
        examples = _texts(source, data_file, "validation", None)
        if not examples:
            raise click.BadParameter("the data has no examples", param_hint="--data")
        result = segment_survival(open_artifact(artifact, kernel_library=_kernel_choice(kernel)), examples)
        for line in result.lines():
            click.echo(line)
        plot_segment_survival(result, png, f"{Path(artifact).name}: tokens kept per text ({result.inputs} inputs)")
        click.echo(f"wrote {png}")
        return
    survival = token_survival(open_artifact(artifact, kernel_library=_kernel_choice(kernel)), text, text_pair)
    for line in survival.lines():
        click.echo(line)
    prediction = f"predicted {survival.label} ({survival.score:.2f})" if survival.label is not None else ""
    title = f"{Path(artifact).name}: {prediction}" if prediction else Path(artifact).name
    try:
        plot_survival(survival, png, title)
    except ImportError as e:
        raise click.ClickException(str(e).splitlines()[0]) from None
    click.echo(f"wrote {png}" + (f"; {prediction}" if prediction else ""))


EVAL_MODES = ("drop", "mask")


@main.command("eval")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint directory, or an artifact directory (model.onnx).")
@click.option("--artifact", type=click.Path(), help="Also evaluate this artifact beside the checkpoint.")
@_data_options("eval")
@click.option("--modes", default="drop,mask", show_default=True, help="PyTorch modes for a checkpoint: drop and/or mask, comma-separated.")
@click.option("--cls-only", is_flag=True, help="A checkpoint's last layer for the CLS row only, as `tokprune-export --cls-only` (an artifact's manifest says itself).")
@click.option("--protect-question", is_flag=True, help="A QA checkpoint's pruning keeps every token outside the context (question, CLS, SEP); PyTorch only, to measure what pruning the question costs.")
@click.option("--protect-second-text", is_flag=True, help="A pair classifier's pruning keeps every token of each pair's second text (an NLI hypothesis); PyTorch only, to measure what pruning it costs.")
@click.option("--max-tokens", type=int, help="Cut every input to its first N tokens (special tokens included; a pair loses from its longer text first): the truncation baseline. Sequence classifiers only.")
@click.option("--json", "json_out", type=click.Path(), help="Also write the results as JSON here.")
@_kernel_option
@user_errors
def eval_command(model, artifact, source, data_file, metric, modes, cls_only, protect_question, protect_second_text, max_tokens, json_out, kernel):
    """Metric on the whole evaluation data, kept tokens per layer, analytic and counted FLOPs, relative FLOPs."""
    from onnx_tokprune.artifact import MODEL_FILE, head_kind
    from onnx_tokprune.data.source import load_split
    from onnx_tokprune.evaluate import eval_table, evaluate_artifact, evaluate_checkpoint
    from onnx_tokprune.modeling import check_checkpoint
    from onnx_tokprune.runtime.session import PrunedSession

    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in mode_list if m not in EVAL_MODES]
    if unknown or not mode_list:
        raise click.BadParameter(f"{modes!r}: give modes from {', '.join(EVAL_MODES)}, separated by commas", param_hint="--modes")
    if json_out:
        check_output_file(json_out)
    kernel_library = _kernel_choice(kernel)
    threads = _pin_torch_threads()
    model_session = PrunedSession(model, threads, kernel_library, spinning=False) if (Path(model) / MODEL_FILE).is_file() else None
    artifact_session = PrunedSession(artifact, threads, kernel_library, spinning=False) if artifact else None
    if model_session is None:
        hf = check_checkpoint(model, "trained", kinds=BOTH_HEADS)
        span = head_kind(hf.get("architectures")) == "span"
    else:
        span = model_session.head == "span"
    if artifact_session is not None and (artifact_session.head == "span") != span:
        raise click.ClickException(f"{model} and {artifact} have different heads: pass the artifact exported from the checkpoint")
    if protect_question and (not span or model_session is not None):
        raise click.UsageError("--protect-question applies to a QA checkpoint (PyTorch), not to an artifact or a classifier")
    if protect_second_text and (span or model_session is not None or artifact_session is not None or max_tokens is not None):
        raise click.UsageError("--protect-second-text applies to a classifier checkpoint (PyTorch) on whole inputs, without --artifact or --max-tokens")
    if max_tokens is not None:
        if span:
            raise click.UsageError("--max-tokens applies to sequence classifiers: a QA model reads long contexts in windows")
        _at_least(max_tokens, 4, "--max-tokens", " tokens")
    if span:
        return _eval_qa(model, model_session, artifact_session, source, data_file, mode_list, json_out, protect_question)
    loaded = []

    def split():
        """The evaluation data, read once, after the model (a broken checkpoint is reported first)."""
        if not loaded:
            loaded.append(load_split(source, data_file, "validation", need_labels=True))
        return loaded[0]

    if model_session is None:
        results = evaluate_checkpoint(model, split, tuple(mode_list), metric, cls_only=cls_only, max_tokens=max_tokens, protect_second=protect_second_text)
    else:
        results = [evaluate_artifact(model_session, split(), metric, max_tokens=max_tokens)]
    if artifact_session is not None:
        results.append(evaluate_artifact(artifact_session, split(), metric, max_tokens=max_tokens))
    click.echo(eval_table(results))
    rows = [r.to_json() for r in results]
    reference = next((r for r in results if r.source == "pytorch-drop"), None)
    onnx_result = next((r for r in results if r.source == "onnxruntime"), None)
    if reference is not None and onnx_result is not None and reference.predictions:
        same = float(np.mean(np.equal(reference.predictions, onnx_result.predictions)))
        click.echo(f"onnxruntime vs pytorch-drop prediction agreement: {100 * same:.2f}% of {reference.examples}")
        rows[results.index(onnx_result)][AGREEMENT_KEY] = same
    if json_out:
        _write_json(json_out, rows)


AGREEMENT_KEY = "agreement_with_pytorch_drop"
"""tokprune-eval --json: the fraction of examples (QA: questions) on which a source gives PyTorch drop
mode's prediction (answer span); in the rows other than pytorch-drop's, when both ran."""


def _eval_qa(model, model_session, artifact_session, source, data_file, modes, json_out, protect_question: bool = False) -> None:
    """tokprune-eval of a span (QA) checkpoint and/or artifact: SQuAD exact match and F1 per source,
    and how many questions get the same answer span as PyTorch's drop mode."""
    from onnx_tokprune.data.squad import load_qa
    from onnx_tokprune.evaluate import evaluate_qa_artifact, evaluate_qa_checkpoint, qa_table

    def split():
        return load_qa(data_file, source.dataset, source.dataset_config, "validation")

    if model_session is None:
        results = evaluate_qa_checkpoint(model, split, modes=tuple(modes), protect_question=protect_question)
    else:
        results = [evaluate_qa_artifact(model_session, split())]
    if artifact_session is not None:
        results.append(evaluate_qa_artifact(artifact_session, split()))
    click.echo(qa_table(results))
    rows = [r.to_json() for r in results]
    reference = next((r for r in results if r.source == "pytorch-drop"), None)
    for row, other in zip(rows, results):
        if reference is not None and other is not reference:
            same = float(np.mean([a == b for a, b in zip(reference.answers, other.answers)]))
            click.echo(f"{other.source} vs pytorch-drop: the same answer span on {100 * same:.2f}% of {reference.questions} questions")
            row[AGREEMENT_KEY] = same
    if json_out:
        _write_json(json_out, rows)


if __name__ == "__main__":
    main()
