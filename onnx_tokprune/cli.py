"""Command line: `tokprune <command>`; each command is also a console script `tokprune-<command>`."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from onnx_tokprune.config import ConfigError
from onnx_tokprune.data.text import DataError
from onnx_tokprune.io import OutputExistsError
from onnx_tokprune.runtime.session import ArtifactError
from onnx_tokprune.runtime.text_encoder import TextTooLongError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    OutputExistsError,
    TextTooLongError,
    ArtifactError,
    FileNotFoundError,
)


def user_errors(func):
    """Turn the package's typed errors into one-line click errors (exit code 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from onnx_tokprune.calibrate import CalibrationError
        from onnx_tokprune.export.exporter import ExportError
        from onnx_tokprune.modeling import CheckpointError
        from onnx_tokprune.parity import ParityError

        try:
            return func(*args, **kwargs)
        except ParityError as e:
            raise click.ClickException(f"parity failed: {type(e).__name__}: {e}") from None
        except (*USER_ERRORS, CalibrationError, ExportError, CheckpointError) as e:
            raise click.ClickException(str(e).splitlines()[0]) from None

    return wrapper


def _offline_defaults() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _layers(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give layer indices separated by commas, e.g. 1,2,3") from None


def _write_json(path: str, data) -> None:
    from onnx_tokprune.config import write_json_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target, data)


@click.group()
def main() -> None:
    """Token pruning that physically removes tokens: calibrate, export, check parity, benchmark."""
    _offline_defaults()


@main.command("calibrate")
@click.option("--model", required=True, help="HF checkpoint directory (or hub name when online).")
@click.option("--data", "data_file", required=True, type=click.Path(), help="Calibration sentences: GLUE .tsv or one per line.")
@click.option("--output", required=True, type=click.Path(), help="Checkpoint directory to write (HF files + tokprune.json).")
@click.option("--keep", type=float, help="Fraction of non-CLS tokens left after the last pruning layer.")
@click.option("--flops", "target_flops", type=float, help="Target relative FLOPs instead of --keep.")
@click.option("--rule", type=click.Choice(["threshold", "top_k"]), default="threshold", show_default=True)
@click.option("--layers", help="Pruning layers, comma-separated (default: all but the first and last).")
@click.option("--normalizer", type=click.Choice(["fixed", "length"]), default="fixed", show_default=True)
@click.option("--normalizer-length", type=int, default=128, show_default=True, help="N of the fixed score normaliser.")
@click.option("--samples", type=int, default=256, show_default=True, help="Calibration sentences read from --data.")
@click.option("--num-labels", type=int, default=2, show_default=True, help="Classes, when the checkpoint has no head yet.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for a newly initialised head.")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@user_errors
def calibrate_command(model, data_file, output, keep, target_flops, rule, layers, normalizer, normalizer_length, samples, num_labels, seed, force):
    """Choose per-layer thresholds (or top-k ratios) from score statistics; no training."""
    _offline_defaults()
    if (keep is None) == (target_flops is None):
        raise click.UsageError("give exactly one of --keep or --flops")
    for name, value in (("keep", keep), ("target FLOPs", target_flops)):
        if value is not None and not 0 < value <= 1:
            raise click.ClickException(f"{name} must be in (0, 1], got {value}")
    from onnx_tokprune.io import check_output_dir

    check_output_dir(Path(output), force)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from onnx_tokprune.calibrate import calibrate
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.io import atomic_output_dir
    from onnx_tokprune.modeling import ADAPTERS, read_model_type
    from onnx_tokprune.runtime.text_encoder import TextEncoder

    examples = read_texts(data_file, limit=samples)
    if Path(model).exists():
        hf = read_model_type(model)
        labels = {} if hf.get("id2label") and hf.get("architectures", [""])[0].endswith("ForSequenceClassification") else {"num_labels": num_labels}
    else:
        labels = {"num_labels": num_labels}
    torch.manual_seed(seed)
    hf_model = AutoModelForSequenceClassification.from_pretrained(model, **labels).eval()
    if hf_model.config.model_type not in ADAPTERS:
        raise click.ClickException(f"architecture {hf_model.config.model_type!r} is not supported (supported: {', '.join(sorted(ADAPTERS))})")
    tokenizer = AutoTokenizer.from_pretrained(model)
    text_encoder = TextEncoder(tokenizer.backend_tokenizer, hf_model.config.max_position_embeddings)
    result = calibrate(
        hf_model,
        text_encoder,
        examples,
        keep=keep,
        target_flops=target_flops,
        rule=rule,
        layers=_layers(layers),
        score_normalizer=normalizer,
        normalizer_length=normalizer_length,
    )
    result.config.provenance.update({"model": str(model), "data": str(data_file)})
    with atomic_output_dir(output, force) as tmp:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        result.config.save(tmp)
    click.echo(f"wrote {output}: {result.config.rule} at layers {list(result.config.pruning_layers)}")
    for layer, fraction in result.kept_fraction.items():
        click.echo(f"  layer {layer}: keeps {100 * fraction:.1f}% of non-CLS tokens")
    click.echo(f"  relative FLOPs on the calibration data: {result.relative_flops:.3f}")


@main.command("export")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint directory with tokprune.json.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or 18).")
@click.option("--output", type=click.Path(), help="Artifact directory (default: <model>-onnx).")
@click.option("--unpruned", is_flag=True, help="Export without TokenPrune (the baseline for benchmarks).")
@click.option("--force", is_flag=True, help="Replace --output if it exists.")
@user_errors
def export_command(model, opset, output, unpruned, force):
    """Export a pruned checkpoint to an ONNX artifact whose TokenPrune nodes remove tokens."""
    from onnx_tokprune.export.exporter import MAX_OPSET, MIN_OPSET, ExportError, count_token_prune, export_artifact
    from onnx_tokprune.io import check_output_dir
    from onnx_tokprune.modeling import load_pruned, read_model_type, wrap

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} or {MAX_OPSET}")
    read_model_type(model)
    output = output or f"{str(model).rstrip('/')}{'-unpruned' if unpruned else ''}-onnx"
    check_output_dir(Path(output), force)
    encoder = load_pruned(model, "drop", require_config=not unpruned)
    if unpruned:
        encoder = wrap(encoder.model, None, "drop")
    path = export_artifact(encoder, model, output, opset, force)
    import onnx

    nodes = count_token_prune(onnx.load(str(path / "model.onnx"), load_external_data=False))
    click.echo(f"wrote {path}: opset {opset}, {nodes} TokenPrune node(s) at layers {list(encoder.pruning_layers)}")


@main.command("parity")
@click.option("--model", required=True, type=click.Path(), help="Checkpoint directory (PyTorch side).")
@click.option("--artifact", required=True, type=click.Path(), help="Artifact directory (onnxruntime side).")
@click.option("--data", "data_file", required=True, type=click.Path(), help="Sentences: GLUE .tsv or one per line.")
@click.option("--samples", type=int, default=500, show_default=True, help="Sentences read from --data (0 = all).")
@click.option("--batch-sizes", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Tolerance on |Δlogit|.")
@click.option("--report", type=click.Path(), help="Also write the report as JSON here.")
@user_errors
def parity_command(model, artifact, data_file, samples, batch_sizes, atol, report):
    """Check that the artifact computes what the PyTorch drop-mode model computes."""
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.modeling import load_pruned
    from onnx_tokprune.parity import check_parity
    from onnx_tokprune.runtime.session import open_artifact

    sizes = [int(b) for b in batch_sizes.split(",")]
    examples = read_texts(data_file, limit=samples or None)
    session = open_artifact(artifact)
    session.text_encoder.token_ids(examples)
    encoder = load_pruned(model, "drop")
    result = check_parity(encoder, session, examples, sizes, atol)
    click.echo(result.table())
    if report:
        _write_json(report, result.to_json())
    result.check()
    click.echo(f"parity OK on {len(examples)} sentences (atol {atol:g})")


@main.command("bench")
@click.option("--artifact", required=True, type=click.Path(), help="Pruned artifact directory.")
@click.option("--baseline", required=True, type=click.Path(), help="Unpruned artifact (tokprune-export --unpruned).")
@click.option("--data", "data_files", required=True, multiple=True, type=click.Path(), help="Sentences; repeat for several files.")
@click.option("--samples", type=int, default=200, show_default=True, help="Sentences per file.")
@click.option("--threads", type=int, default=2, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Runs per sentence (median taken).")
@click.option("--json", "json_out", type=click.Path(), help="Also write the results as JSON here.")
@user_errors
def bench_command(artifact, baseline, data_files, samples, threads, repeats, json_out):
    """Batch-1 latency: pruned vs unpruned onnxruntime, speedup, FLOPs reduction, removal efficiency."""
    from onnx_tokprune.data.text import read_texts
    from onnx_tokprune.runtime.bench import latency_table, measure_latency, to_json

    results = [
        measure_latency(artifact, baseline, read_texts(f, limit=samples), Path(f).parent.name or Path(f).name, threads, repeats)
        for f in data_files
    ]
    click.echo(latency_table(results))
    if json_out:
        _write_json(json_out, to_json(results))



if __name__ == "__main__":
    main()
