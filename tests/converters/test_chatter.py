"""What a conversion shows: our stage lines, progress bars, warnings and errors, and none of the backends'
chatter (their log records, warnings and native lines on fd 2), unless --verbose; tracing itself warns about
nothing."""

import re
import subprocess
import sys
import warnings

import pytest
from build_helpers import CLI, start_build, stderr_lines


def test_sample_images_are_writable_so_tracing_them_warns_about_nothing(tiny_reference):
    """torch.from_numpy of a read-only array warns ("The given NumPy array is not writable"), once per process:
    the arrays themselves are checked, and a trace run with warnings as errors."""
    from minivlm.converters.samples import calibration_images, trace

    samples = calibration_images()
    assert [s.name for s in samples if not s.image.flags.writeable] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace(tiny_reference.pipeline, samples[2])  # a scene


@pytest.mark.parametrize("jobs", [1, 2])
def test_convert_stderr_shows_our_lines_and_errors_only_and_verbose_shows_the_rest(jobs, tmp_path):
    """Backend chatter: log records and warnings (re-emitted from worker processes) and native lines on fd 2."""
    proc = start_build(CLI, tmp_path, "--out", str(tmp_path / "tiny"), "--jobs", str(jobs), seconds=0,
                        SLOW_TARGET_CHATTER="1", SLOW_TARGET_FAIL="tee_stage1")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    shown = stderr_lines(err)
    assert shown[0] == "tracing the reference pipeline on 1 real images"
    assert "WARNING: our warning from tee_stage1\n" in err  # maybe after a progress bar, on its line
    assert "E0000 00:00:1796034652.485349    7171 converter.cc:12] a native error\n" in err
    assert shown[-1] == "error: a graph failed to convert: ValueError: tee_stage1 has an op no backend knows"
    for chatter in ("backend warning", "backend log record", "native chatter", "absl::InitializeLog", "XNNPACK"):
        assert chatter not in err
    assert [p.name for p in tmp_path.iterdir()] == ["pids"]  # the failed build left nothing
    if jobs == 1:
        return
    (tmp_path / "verbose").mkdir()
    loud = start_build(CLI, tmp_path / "verbose", "--out", str(tmp_path / "tiny"), "--jobs", str(jobs), "--verbose",
                        seconds=0, SLOW_TARGET_CHATTER="1", SLOW_TARGET_FAIL="tee_stage1")
    _, err = loud.communicate(timeout=300)
    for chatter in ("backend warning from tee_stage1", "backend log record from tee_stage1", "native chatter from absl",
                    "native chatter from torch", "absl::InitializeLog", "XNNPACK", "our warning", "a native error"):
        assert chatter in err


STAGE_OR_BAR = re.compile(r"(tracing |fp16 range |packing |writing |WARNING: |(tee_stage1|tee_stage2|caption_prefix|"
                          r"caption_step|caption_step_beam|vqa|match) +[ █▏▎▍▌▋▊▉]* \d/\d)")


@pytest.mark.build
@pytest.mark.parametrize("target", ["tflite", "coreml", "executorch"])
def test_a_real_conversion_shows_only_our_stage_lines_bars_and_warnings(target, tmp_path):
    """The backends' own chatter (coremltools' version notes and int64 casts, torchao, absl, TFLite, torch's
    logging) stays off the terminal; minutes per target."""
    if target == "coreml":
        pytest.importorskip("coremltools")
    out = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-c", "from minivlm.cli import convert_main; convert_main()", "--target", target,
                           "--model", "minivlm-tiny", "--random-init", "--out", str(out), "--jobs", "2"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in re.split(r"[\r\n]+", proc.stderr.replace("\x1b[A", "\n")) if line.strip()]
    assert [line for line in lines if not STAGE_OR_BAR.match(line)] == []
    assert f"wrote {out} ({target}," in proc.stdout
