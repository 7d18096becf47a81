"""The `minivlm` and `minivlm-convert` commands (Typer). Each command parses its arguments, calls one library
function and turns the SDK's own errors into a one-line message and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Annotated, Callable, Optional

import typer

from minivlm.errors import MiniVLMError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="MiniVLM SDK: reference model, phone builds, parity.")

ModelArg = Annotated[str, typer.Argument(help="A model preset: minivlm-demo, minivlm-paper, minivlm-minilm-l6, minivlm-tiny.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="A preset with bundled weights, or a .safetensors file from `minivlm train`.")]
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


@app.command()
@_one_line_errors
def info(
    model: ModelArg = "minivlm-paper",
    image_size: Annotated[Optional[int], typer.Option(help="Square input side (default: the preset's).")] = None,
) -> None:
    """Parameters and FLOPs per part, counted by running the model (512x512, 50 regions, 70 text+tag tokens for the paper preset)."""
    from minivlm.python_ref.profile import format_report, profile_model

    typer.echo(format_report(profile_model(model, image_size=image_size)))


@app.command()
@_one_line_errors
def detect(
    image: ImageArg,
    model: ModelOpt = "minivlm-demo",
    out: Annotated[Optional[str], typer.Option(help="Also write the image with labelled boxes to this file.")] = None,
) -> None:
    """Detect objects: one line per region (label, score, box in image pixels)."""
    from minivlm.drawing import draw_detections
    from minivlm.images import load_image
    from minivlm.loading import load

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

    typer.echo(load(model).caption(image, num_beams=beams))


@app.command()
@_one_line_errors
def ask(
    image: ImageArg,
    question: Annotated[str, typer.Argument(help='A question, e.g. "how many shapes are there?"')],
    model: ModelOpt = "minivlm-demo",
) -> None:
    """Answer a question about an image."""
    from minivlm.loading import load

    typer.echo(load(model).answer(image, question))


@app.command()
@_one_line_errors
def match(
    image: ImageArg,
    text: Annotated[str, typer.Argument(help="A caption to score against the image.")],
    model: ModelOpt = "minivlm-demo",
) -> None:
    """Probability that a text describes an image (the image-text matching head)."""
    from minivlm.loading import load

    typer.echo(f"{load(model).match(image, text):.4f}")


@app.command("eval")
@_one_line_errors
def evaluate(
    model: ModelOpt = "minivlm-demo",
    n: Annotated[int, typer.Option("--n", help="Number of fresh scenes.")] = 300,
    seed: Annotated[int, typer.Option(help="Scene stream; training uses stream 1.")] = 1000,
) -> None:
    """Score a model on fresh generated scenes: detection mAP@0.5, caption exact match, VQA accuracy."""
    from tqdm import tqdm

    from minivlm.evaluate import evaluate as run
    from minivlm.loading import load

    report = run(load(model).pipeline, n=n, seed=seed, progress=lambda it: tqdm(it, desc="eval", leave=False, disable=not sys.stderr.isatty()))
    typer.echo(report.table())


@app.command()
@_one_line_errors
def train(
    out: Annotated[str, typer.Option(help="Working folder: checkpoints, region cache and the final model.safetensors.")] = "runs/minivlm-demo",
    seed: Annotated[int, typer.Option(help="Training scene stream and initialisation seed.")] = 1,
    scale: Annotated[float, typer.Option(help="Multiply every step and scene count (e.g. 0.01 for a smoke run).")] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show progress bars with the losses.")] = True,
) -> None:
    """Train the demo model from scratch on generated scenes (resumes from the checkpoints in --out)."""
    from minivlm.training import TrainSettings, train as run

    settings = TrainSettings(seed=seed)
    if scale != 1.0:
        if scale <= 0:
            raise typer.BadParameter(f"--scale is {scale}, expected a positive factor")
        settings = settings.scaled(scale)
    typer.echo(f"wrote {run(settings, out, progress=progress)}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    app()


if __name__ == "__main__":
    sys.exit(main())
