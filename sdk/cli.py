"""The `minivlm` and `minivlm-convert` commands (Typer). Each command parses its arguments, calls one library
function and turns the SDK's own errors into a one-line message and exit code 2."""

from __future__ import annotations

import enum
import functools
import logging
import os
import signal
import sys
import warnings
from typing import Annotated, Callable, Optional

import typer

from minivlm.converters.targets import TARGETS
from minivlm.errors import InputError, MiniVLMError, NoDetectionsWarning

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MiniVLM SDK: reference model, phone builds, parity.")

ModelArg = Annotated[str, typer.Argument(help="A model preset: minivlm-demo, minivlm-paper, minivlm-minilm-l6, minivlm-tiny, "
                                                "or efficientvlm-teacher, efficientvlm-paper, efficientvlm-tiny, "
                                                "efficientvlm-demo-teacher, efficientvlm-demo-student, efficientvlm-demo-tiny; or a .safetensors weights file.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="A preset with bundled weights (MiniVLM or EfficientVLM), or a .safetensors file from `minivlm train`.")]
ImageArg = Annotated[str, typer.Argument(help="An image file (any size; grayscale, RGBA and palette images are converted).")]


def _one_line_errors(command: Callable) -> Callable:
    """Known errors become `error: <message>` on stderr and exit 2; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MiniVLMError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _printing_warnings(task: Callable[[], object]) -> object:
    """Run `task`; the SDK's warnings become `warning: <message>` lines on stderr (others show as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoDetectionsWarning)
        result = task()
    for w in caught:
        if issubclass(w.category, NoDetectionsWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


@app.command()
@_one_line_errors
def info(
    model: ModelArg = "minivlm-paper",
    image_size: Annotated[Optional[int], typer.Option(help="Square input side (default: the preset's).")] = None,
) -> None:
    """Parameters and FLOPs per part, counted by running the model (512x512, 50 regions, 70 text+tag tokens for the
    paper preset; EfficientVLM: one image and one text of max_text_len tokens, a student's ratios to its teacher,
    and the heads and FFN widths of every layer of a structurally pruned weights file)."""
    from minivlm.loading import model_config, model_weights
    from minivlm.pruning.report import format_report, pruning_of
    from minivlm.python_ref import profile
    from minivlm.python_ref.efficientvlm import profile as efficientvlm_profile
    from minivlm.python_ref.families import family_of

    cfg = model_config(model)
    report = {"minivlm": profile.info_report, "efficientvlm": efficientvlm_profile.info_report}[family_of(cfg).name]
    typer.echo(report(cfg, image_size=image_size))
    weights = model_weights(model)
    pruning = None if weights is None else pruning_of(weights)
    if pruning is not None:
        typer.echo("pruning report (`minivlm prune`):\n" + format_report(pruning))


@app.command()
@_one_line_errors
def detect(
    image: ImageArg,
    model: ModelOpt = "minivlm-demo",
    out: Annotated[Optional[str], typer.Option(help="Also write the image with labelled boxes to this file.")] = None,
) -> None:
    """Detect objects: one line per region (label, score, box in image pixels). MiniVLM models only (EfficientVLM has no detector)."""
    from minivlm.drawing import check_output, draw_detections
    from minivlm.images import load_image
    from minivlm.loading import load

    if out is not None:
        check_output(out)
    pixels = load_image(image)
    found = load(model).detect(pixels)
    for d in found:
        x1, y1, x2, y2 = d.box
        typer.echo(f"{d.label:<20} {d.score:6.3f}  [{x1:7.1f} {y1:7.1f} {x2:7.1f} {y2:7.1f}]")
    if out is not None:
        draw_detections(pixels, found, out)
        typer.echo(f"wrote {out}")


@app.command()
@_one_line_errors
def caption(
    image: ImageArg,
    model: ModelOpt = "minivlm-demo",
    beams: Annotated[int, typer.Option(help="Beam width; 1 is greedy decoding.")] = 1,
) -> None:
    """Caption an image."""
    from minivlm.loading import load

    typer.echo(_printing_warnings(lambda: load(model).caption(image, num_beams=beams)))


@app.command()
@_one_line_errors
def ask(
    image: ImageArg,
    question: Annotated[str, typer.Argument(help='A question, e.g. "how many shapes are there?"')],
    model: ModelOpt = "minivlm-demo",
) -> None:
    """Answer a question about an image."""
    from minivlm.loading import load

    typer.echo(_printing_warnings(lambda: load(model).answer(image, question)))


@app.command()
@_one_line_errors
def match(
    image: ImageArg,
    text: Annotated[str, typer.Argument(help="A caption to score against the image.")],
    model: ModelOpt = "minivlm-demo",
) -> None:
    """Probability that a text describes an image (the image-text matching head)."""
    from minivlm.loading import load

    typer.echo(f"{_printing_warnings(lambda: load(model).match(image, text)):.4f}")


@app.command("eval")
@_one_line_errors
def evaluate(
    model: ModelOpt = "minivlm-demo",
    n: Annotated[int, typer.Option("--n", help="Number of fresh scenes.")] = 300,
    seed: Annotated[int, typer.Option(help="Scene stream; training uses stream 1.")] = 1000,
) -> None:
    """Score a model on fresh generated scenes: caption exact match and VQA accuracy; detection mAP@0.5 for a
    MiniVLM, image-to-text retrieval R@1 over the first 100 scenes for an EfficientVLM."""
    from tqdm import tqdm

    from minivlm.evaluate_vlm import score as run
    from minivlm.loading import load

    report = run(load(model).pipeline, n=n, seed=seed, progress=lambda it: tqdm(it, desc="eval", leave=False, disable=not sys.stderr.isatty()))
    typer.echo(report.table())


@app.command()
@_one_line_errors
def parity(
    build: Annotated[str, typer.Argument(help="A build folder written by minivlm-convert.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The reference: a preset or a .safetensors (default: the build's own model).")] = None,
    scenes: Annotated[Optional[int], typer.Option(min=0, help="Demo scenes to compare on besides the photos (default 24).")] = None,
    all_photos: Annotated[bool, typer.Option("--all-photos", help="Every colour photo scikit-image ships, not only four.")] = False,
) -> None:
    """Run a build through its real runtime (a Core ML build off macOS: the SDK's ML-program executor) next to the
    reference, per graph, host step, task and (Core AI, Core ML) layer, against named tolerances, and audit the
    weights it stores (ExecuTorch, TFLite, Core AI) against the reference; print the table, write
    parity_report.json into the build, exit 1 if any check fails."""
    from tqdm import tqdm

    from minivlm import parity as lib

    report = lib.run_parity(build, model=model, scenes=lib.DEFAULT_SCENES if scenes is None else scenes,
                            photos=lib.ALL_PHOTOS if all_photos else lib.DEFAULT_PHOTOS,
                            progress=lambda it: tqdm(it, desc="parity", leave=False, disable=not sys.stderr.isatty()),
                            write=False)
    typer.echo(report.table())
    typer.echo(f"wrote {lib.write_report(report)}")  # after the table, which stays printed if the write fails
    if not report.passed:
        raise typer.Exit(1)


@app.command()
@_one_line_errors
def bench(
    builds: Annotated[Optional[list[str]], typer.Argument(help="Build folders written by minivlm-convert, of the --model model (a Core ML build off macOS is listed as not runnable).", show_default=False)] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="A preset (with --random-init for one without weights) or a .safetensors file from `minivlm train`.")] = "minivlm-demo",
    versus: Annotated[Optional[list[str]], typer.Option("--versus", help="Another model of the same family (preset or .safetensors) to measure side by side in this run, interleaved with --model (repeatable). The first --versus model is the baseline: the comparison gives every model's median / the baseline's, same runtime and thread count.", show_default=False)] = None,
    versus_build: Annotated[Optional[list[str]], typer.Option("--versus-build", help="A build folder of a --versus model (repeatable); it is compared with the --model build of the same target and precision.", show_default=False)] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Untrained presets (e.g. minivlm-paper), seeded with 0 as the tests' builds are (every model given).")] = False,
    threads: Annotated[str, typer.Option(help="Thread counts to measure at, comma-separated; each runtime runs at each.")] = "1",
    runs: Annotated[int, typer.Option(help="Timed runs per graph (after 3 warm-up runs); 20 or more for a median worth quoting.")] = 20,
    task_runs: Annotated[Optional[int], typer.Option(help="Timed runs per end-to-end task (after 1 warm-up run; default: --runs).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the whole report (every run's time, machine, versions) to this .json file.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Draw a bar chart (time / ONNX Runtime per graph and task; with --versus, time / the baseline's) to this .png file.")] = None,
) -> None:
    """Time a model's graphs (on real recorded inputs) and its tasks end to end in PyTorch eager, ONNX Runtime
    fp32 and each build given, each runtime and thread count in its own process: median, p10/p90, ratios to ONNX
    Runtime and eager, FLOPs and GFLOP/s, load time, peak RSS and size. With --versus, other models side by side
    and a comparison with the baseline (docs/BENCHMARKS.md)."""
    from minivlm.bench import run_bench
    from minivlm.bench.report import table

    report = run_bench(model, builds or (), versus=versus or (), versus_builds=versus_build or (),
                       random_init=random_init, threads=threads, runs=runs, task_runs=task_runs,
                       json_path=json_out, plot_path=plot, progress=lambda line: typer.echo(f"bench: {line}", err=True),
                       command="minivlm bench " + " ".join(sys.argv[2:]))
    typer.echo(table(report))
    for path in filter(None, (json_out, plot)):
        typer.echo(f"wrote {path}")


@app.command()
@_one_line_errors
def train(
    out: Annotated[str, typer.Option(help="Working folder: checkpoints, region cache and the final model.safetensors.")] = "runs/minivlm-demo",
    preset: Annotated[str, typer.Option("--preset", help="What to train: minivlm-demo, or an efficientvlm-demo-* preset.")] = "minivlm-demo",
    seed: Annotated[int, typer.Option(help="Training scene stream and initialisation seed.")] = 1,
    scale: Annotated[float, typer.Option(help="Multiply every step and scene count (e.g. 0.01 for a smoke run; counts never drop below 2).")] = 1.0,
    init_from: Annotated[Optional[str], typer.Option(help="EfficientVLM only: start from the layers of these weights (student layer i <- layer 2i) and train without distilling.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars with the losses.")] = True,
) -> None:
    """Train a demo model from scratch on generated scenes (resumes from the checkpoints in --out, which must
    then have been made with the same settings)."""
    from minivlm.python_ref.efficientvlm.config import PRESETS as EFFICIENTVLM_PRESETS

    if preset in EFFICIENTVLM_PRESETS:
        from minivlm.training.vlm import train_vlm
        from minivlm.training.vlm_settings import STUDENT_STEPS, VLMTrainSettings

        steps = {"steps": STUDENT_STEPS} if init_from else {}
        settings = VLMTrainSettings(preset=preset, seed=seed, init_from=init_from or "", **steps).scaled(scale)
        typer.echo(f"wrote {train_vlm(settings, out, progress=progress)}")
        return
    if init_from is not None:
        raise InputError(f"--init-from is for EfficientVLM presets; {preset!r} is not one")
    from minivlm.training import TrainSettings, train as run

    settings = TrainSettings(preset=preset, seed=seed).scaled(scale)
    typer.echo(f"wrote {run(settings, out, progress=progress)}")


@app.command()
@_one_line_errors
def distill(
    teacher: Annotated[str, typer.Option(help="The teacher's weights (a .safetensors file from `minivlm train`).")],
    out: Annotated[str, typer.Option(help="Working folder: checkpoints and the final model.safetensors.")] = "runs/efficientvlm-demo-student",
    preset: Annotated[str, typer.Option("--preset", help="The student's EfficientVLM preset (half the teacher's layers).")] = "efficientvlm-demo-student",
    seed: Annotated[int, typer.Option(help="Training scene stream and initialisation seed.")] = 1,
    scale: Annotated[float, typer.Option(help="Multiply the step count (e.g. 0.01 for a smoke run).")] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show progress bars with every loss term.")] = True,
) -> None:
    """Distil a teacher into a student on generated scenes: the student starts from the teacher's layers
    (student layer i <- teacher layer 2i) and learns 0.6 task + 0.4 KD (hidden states, attention, logits).
    Resumes from the checkpoints in --out."""
    from minivlm.training.vlm import train_vlm
    from minivlm.training.vlm_settings import STUDENT_STEPS, VLMTrainSettings

    settings = VLMTrainSettings(preset=preset, seed=seed, teacher=teacher, steps=STUDENT_STEPS).scaled(scale)
    typer.echo(f"wrote {train_vlm(settings, out, progress=progress)}")


class PruneTask(str, enum.Enum):
    caption = "caption"
    vqa = "vqa"
    match = "match"


@app.command()
@_one_line_errors
def prune(
    sparsity: Annotated[float, typer.Option("--sparsity", "-t", help="Target t: the fraction of the attention-head and feed-forward-neuron parameters to remove, all modalities together.")],
    model: ModelOpt = "efficientvlm-demo-student",
    task: Annotated[Optional[PruneTask], typer.Option(help="EfficientVLM: the task the pruned model keeps, its loss and the logits distilled (default caption). A MiniVLM's fusion is pruned for captions and VQA at once: no --task.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Working folder: checkpoints and the final model.safetensors (default runs/prune-<task>-<t>).")] = None,
    steps: Annotated[int, typer.Option(help="Fine-tuning steps under the gates.")] = 400,
    warmup_steps: Annotated[int, typer.Option(help="Steps over which the target rises from 0 to t.")] = 150,
    seed: Annotated[int, typer.Option(help="Scene stream and gate initialisation seed.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with ŝ, t, λ₁, λ₂ and the losses.")] = True,
) -> None:
    """Prune an EfficientVLM, or a MiniVLM's fusion encoder, to a target sparsity: fine-tune under hard-concrete gates
    on every attention head and FFN neuron (task loss 0.6 + distillation from the unpruned model 0.4 + a Lagrangian
    holding the expected sparsity at t), then remove what the gates zero and save the smaller model with its report.
    Resumes from the checkpoints in --out."""
    from minivlm.pruning.report import format_report, pruning_of
    from minivlm.pruning.run import PruneSettings, prune_run, task_for
    chosen = task_for(model, task and task.value)
    settings = PruneSettings(model, chosen, sparsity, steps=steps, warmup_steps=warmup_steps, seed=seed)
    final = prune_run(settings, out or f"runs/prune-{chosen}-{sparsity:g}", progress=progress)
    typer.echo(f"{format_report(pruning_of(final))}\nwrote {final}")


# --- convert (also the `minivlm-convert` command) --------------------------------------------------------------
# Choices and their help come from the converters' TARGETS table, so `--help` lists exactly what exists.


def _choices(name: str, field: str) -> type[enum.Enum]:
    values = dict.fromkeys(v for t in TARGETS.values() for v in getattr(t, field))
    return enum.Enum(name, {v: v for v in values}, type=str)


def _per_target(field: str) -> str:
    parts = [f"{t.name}: {', '.join(getattr(t, field))}" for t in TARGETS.values() if getattr(t, field)]
    return "; ".join(parts) + " (first = default)"


TargetChoice = enum.Enum("TargetChoice", {t: t for t in TARGETS}, type=str)
PrecisionChoice = _choices("PrecisionChoice", "precisions")
DelegateChoice = _choices("DelegateChoice", "delegates")
ComputeUnitsChoice = _choices("ComputeUnitsChoice", "compute_units")



def convert(
    target: Annotated[TargetChoice, typer.Option("--target", "-t", help="The phone runtime to build for.")],
    model: ModelOpt = "minivlm-demo",
    precision: Annotated[Optional[PrecisionChoice], typer.Option(help=f"Numeric precision. {_per_target('precisions')}.")] = None,
    delegate: Annotated[Optional[DelegateChoice], typer.Option(help=f"executorch: the backend graphs are lowered to; tflite: the delegate the build is checked and recorded for (one file serves all three). {_per_target('delegates')}.")] = None,
    compute_units: Annotated[Optional[ComputeUnitsChoice], typer.Option(help=f"Compute units (Core ML) or preferred compute unit (Core AI) recorded in the build. {_per_target('compute_units')}.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Build folder (default out/<model>-<target>-<precision>, plus -<delegate> or -<compute units> when not the default).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing build folder that minivlm-convert wrote (only once the new build is complete).")] = False,
    random_init: Annotated[bool, typer.Option("--random-init", help="Build an untrained preset (e.g. minivlm-tiny) instead of bundled weights.")] = False,
    seed: Annotated[Optional[int], typer.Option(min=0, help="With --random-init: the seed its weights are drawn with (default 0). The manifest records it with the weights' sha256, so that `minivlm parity` re-creates them.")] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Graphs converted at once, in worker processes (1 = in this process).")] = min(os.cpu_count() or 1, 6),
    verbose: Annotated[bool, typer.Option("--verbose", help="Also show the backends' own log messages and warnings (hidden by default; their errors always show).")] = False,
) -> None:
    """Convert a model into one self-contained build folder: graph files, vocabularies, goldens and manifest.json (with sha256 of every file), written atomically."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from minivlm.console import TERMINATING, ConversionBars, backend_chatter_hidden, signals_interrupt
    from minivlm.conversion import Interrupted, convert as run, format_report

    bars = ConversionBars()
    try:
        # Log lines are printed above the progress bars, not after one on its line.
        with signals_interrupt(), logging_redirect_tqdm(), backend_chatter_hidden(verbose):
            report = run(model, target.value, precision=precision and precision.value, delegate=delegate and delegate.value,
                         compute_units=compute_units and compute_units.value, out=out, force=force,
                         random_init=random_init, seed=seed, progress=bars, jobs=jobs)
    except Interrupted as stop:
        for s in TERMINATING:  # exiting now: a further Ctrl-C must not interrupt the last line
            signal.signal(s, signal.SIG_IGN)
        bars.close()
        typer.echo(f"error: interrupted by {stop}; the unfinished build was removed and nothing else was changed", err=True)
        raise typer.Exit(128 + stop.signum) from None
    except BaseException:
        bars.close()  # before the error line, not after it when the interpreter exits
        raise
    typer.echo(format_report(report))


app.command("convert")(_one_line_errors(convert))
convert_app = typer.Typer(add_completion=False, help="Convert a MiniVLM or EfficientVLM model for ExecuTorch, Core ML or TFLite.")
convert_app.command()(_one_line_errors(convert))


def main() -> None:
    from PIL import Image

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # Files past Pillow's pixel limit are refused by minivlm.images with a one-line error; Pillow's own warning
    # about them would only repeat it as a traceback-like line.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    app()


def convert_main() -> None:
    """Entry point of `minivlm-convert`."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    convert_app()


if __name__ == "__main__":
    sys.exit(main())
