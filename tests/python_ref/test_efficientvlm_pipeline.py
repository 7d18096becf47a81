"""EfficientVLM's export graphs and pipeline (python_ref/efficientvlm/graphs.py, pipeline.py, preprocess.py): each
graph computes what the model's methods compute, the pipeline assembled from the graphs gives the eager model's
captions (generate.py), answers and match probabilities, and preprocessing is Pillow's bicubic resize bit for bit."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from minivlm.python_ref.efficientvlm.config import CLIP_MEAN, CLIP_STD, efficientvlm_tiny, vocab_path
from minivlm.python_ref.efficientvlm.generate import greedy_caption, greedy_caption_ids, prompt_ids
from minivlm.python_ref.efficientvlm.graphs import GRAPH_NAMES, export_graphs
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.efficientvlm.pipeline import Graphs, Pipeline, Vocabularies, similarity
from minivlm.python_ref.efficientvlm.preprocess import preprocess, preprocess_batch, resize_bicubic
from minivlm.python_ref.errors import ConfigError, InputError
from minivlm.python_ref.scenes import generate_scene
from minivlm.python_ref.tokenizer import Tokenizer

CFG = replace(efficientvlm_tiny(), text=replace(efficientvlm_tiny().text, max_text_len=10))  # 5 caption steps
TOKENIZER = Tokenizer.from_vocab(vocab_path(CFG))
EXACT = dict(atol=0, rtol=0)
# Other batch shapes or a sliced position may take other matmul kernels (docs/TESTING.md): last bits only.
CLOSE = dict(atol=1e-5, rtol=1e-5)


def _model(seed: int = 0) -> EfficientVLM:
    torch.manual_seed(seed)
    model = EfficientVLM(CFG).eval()
    with torch.no_grad():  # off init, so that a swapped or unused tensor shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (45, 70, 3), dtype=np.uint8), np.array(generate_scene(20_000, 0).image)]


def _pipeline(model: EfficientVLM) -> Pipeline:
    return Pipeline.from_model(model, TOKENIZER, Vocabularies.placeholder(CFG))


# --- preprocessing -----------------------------------------------------------------------------------------------


def _pillow_runs_vertical_first(h: int, w: int, size: int) -> bool:
    """Pillow 13 runs the vertical pass first when the height shrinks much more than the width
    (python-pillow/Pillow#9549); every earlier Pillow, whose resize X-VLM used, runs the horizontal pass first.
    The order matters only when both passes run."""
    return int(Image.__version__.split(".")[0]) >= 13 and w != size and size < h and h - size > 2 * (w - size)


@pytest.mark.parametrize("h, w, size", [(512, 512, 224), (300, 451, 128), (17, 5, 32), (1, 1, 32), (100, 32, 32),
                                        (32, 32, 32), (31, 33, 224), (2000, 1500, 128), (480, 640, 384), (256, 256, 128)])
def test_resize_is_pillows_bicubic_bit_for_bit(h, w, size):
    assert not _pillow_runs_vertical_first(h, w, size)
    image = np.random.default_rng(h * w + size).integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = np.array(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    np.testing.assert_array_equal(resize_bicubic(image, size), want)


def test_tall_images_keep_pillows_classic_pass_order():
    """On a tall image Pillow 13 runs its two passes the other way round, which rounds the intermediate rows
    differently; the reference keeps the order of the Pillow X-VLM ran on. Resizing the transposed image runs
    our passes in Pillow 13's order: then the two agree bit for bit again."""
    image = np.random.default_rng(0).integers(0, 256, (640, 480, 3), dtype=np.uint8)
    pillow = np.array(Image.fromarray(image).resize((384, 384), Image.BICUBIC))
    if not _pillow_runs_vertical_first(640, 480, 384):
        np.testing.assert_array_equal(resize_bicubic(image, 384), pillow)
        return
    assert (resize_bicubic(image, 384) != pillow).any()
    np.testing.assert_array_equal(resize_bicubic(image.transpose(1, 0, 2), 384).transpose(1, 0, 2), pillow)


def test_preprocess_normalises_as_torchvision():
    image = _images()[0]
    pixels = preprocess(image, 32, CLIP_MEAN, CLIP_STD)
    resized = torch.from_numpy(np.array(Image.fromarray(image).resize((32, 32), Image.BICUBIC))).permute(2, 0, 1)
    want = (resized.float().div(255) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], want, **EXACT)


def test_preprocess_batch_is_pillow_resize_per_image():
    """The training path resizes a whole stack in one pass; each image must still be Pillow's resize of it
    (more lines than one block, so the blocks' seams are crossed)."""
    images = [np.random.default_rng(k).integers(0, 256, (300, 211, 3), dtype=np.uint8) for k in range(40)]
    batch = preprocess_batch(images, 48, CLIP_MEAN, CLIP_STD)
    assert batch.shape == (40, 3, 48, 48)
    for image, pixels in zip(images, batch):
        resized = torch.from_numpy(np.array(Image.fromarray(image).resize((48, 48), Image.BICUBIC))).permute(2, 0, 1)
        want = (resized.float().div(255) - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
        torch.testing.assert_close(pixels, want, **EXACT)
    with pytest.raises(InputError, match="expected one shape"):
        preprocess_batch([images[0], images[0][:10]], 48, CLIP_MEAN, CLIP_STD)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_preprocess_refuses_what_is_not_an_rgb_image(bad):
    with pytest.raises(InputError, match="expected uint8 \\(H, W, 3\\) RGB|at least 1x1"):
        preprocess(bad, 32, CLIP_MEAN, CLIP_STD)


# --- graphs ------------------------------------------------------------------------------------------------------


def _text_inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, CFG.text.vocab_size, (2, CFG.text.max_text_len), generator=g)
    mask = torch.ones(2, CFG.text.max_text_len)
    mask[1, 6:] = 0.0
    return ids, mask


@torch.no_grad()
def test_each_graph_computes_the_models_methods():
    model = _model()
    graphs = export_graphs(model)
    images = torch.randn(2, 3, CFG.vision.image_size, CFG.vision.image_size, generator=torch.Generator().manual_seed(2))
    ids, mask = _text_inputs()
    tokens, feature = graphs["vision"](images)
    torch.testing.assert_close(tokens, model.encode_image(images), **EXACT)
    torch.testing.assert_close(feature, model.heads.itc.image_features(tokens), **EXACT)
    (text_feature,) = graphs["text_feature"](ids, mask)
    torch.testing.assert_close(text_feature, model.heads.itc.text_features(model.encode_text(ids, mask)), **EXACT)
    torch.testing.assert_close(graphs["match"](tokens, ids, mask)[0], model.itm_logits(images, ids, mask), **EXACT)
    torch.testing.assert_close(graphs["vqa"](tokens, ids, mask)[0], model.vqa_logits(images, ids, mask), **EXACT)
    (logits,) = graphs["caption_step"](tokens, ids, mask)
    fused = model.fuse_causal(model.text.forward_causal(ids, mask), mask, tokens)
    torch.testing.assert_close(logits, model.mlm_logits(fused), **EXACT)
    assert logits.shape == (2, CFG.text.max_text_len, CFG.text.vocab_size)
    torch.testing.assert_close(logits[:, 4], model.mlm_logits(fused[:, 4]), **CLOSE)  # what generate.py reads
    # the ITC logits are the cosines over the temperature
    itc = model.itc_logits(images, ids, mask)[0]
    torch.testing.assert_close(similarity(feature, text_feature) / model.heads.itc.temp, itc, **CLOSE)


@torch.no_grad()
def test_graphs_name_their_tensors_and_take_their_example_inputs():
    for name, graph in export_graphs(_model()).items():
        for batch in (1, 2):
            inputs = graph.example_inputs(batch)
            assert len(inputs) == len(graph.input_names) and all(t.shape[0] == batch for t in inputs)
            assert [t.dtype for t in inputs if t.dtype != torch.float32] == \
                   [torch.int64] * sum(n == "input_ids" for n in graph.input_names)
            outputs = graph(*inputs)
            assert isinstance(outputs, tuple) and len(outputs) == len(graph.output_names), name
    assert tuple(export_graphs(_model())) == GRAPH_NAMES


def test_graphs_hold_only_the_modules_they_run():
    graphs = export_graphs(_model())
    assert {n.split(".")[0] for n, _ in graphs["vision"].named_parameters()} == {"vision", "vision_proj"}
    assert {n.split(".")[0] for n, _ in graphs["text_feature"].named_parameters()} == {"text", "text_proj"}
    assert {n.split(".")[0] for n, _ in graphs["match"].named_parameters()} == {"text", "cross", "itm_head"}
    assert {n.split(".")[0] for n, _ in graphs["vqa"].named_parameters()} == {"text", "cross", "vqa_head"}
    assert {n.split(".")[0] for n, _ in graphs["caption_step"].named_parameters()} == {"text", "cross", "mlm_head"}


# --- the pipeline assembled from graphs against the eager model ---------------------------------------------------


def test_pipeline_from_graphs_equals_the_eager_model():
    model = _model()
    pipe = _pipeline(model)
    for image in _images():
        pixels = pipe.preprocess(image)
        assert pipe.caption(image) == greedy_caption(model, pixels, TOKENIZER)[0]
        with torch.no_grad():
            for question in ("how many shapes are there?", "what color is the circle?"):
                ids, mask = pipe.pack(question)
                want = int(model.vqa_logits(pixels, ids, mask).argmax())
                assert pipe.answer(image, question) == pipe.vocab.answers[want]
            ids, mask = pipe.pack("a red circle")
            want = float(torch.softmax(model.itm_logits(pixels, ids, mask), dim=-1)[0, 1])
            assert pipe.match(image, "a red circle") == pytest.approx(want, abs=1e-6)
            image_feature = model.heads.itc.image_features(model.encode_image(pixels))[0]
            torch.testing.assert_close(pipe.image_feature(image), image_feature, **EXACT)
            text_feature = model.heads.itc.text_features(model.encode_text(ids, mask))[0]
            torch.testing.assert_close(pipe.text_feature("a red circle"), text_feature, **EXACT)


def test_caption_stops_at_sep_as_generate_does():
    model = _model()
    pipe = _pipeline(model)
    image = _images()[1]
    full = greedy_caption_ids(model, pipe.preprocess(image), prompt_ids(TOKENIZER), TOKENIZER.sep_id)[0]
    assert pipe.caption_tokens(pipe.encode(image)).token_ids == tuple(full)
    with torch.no_grad():  # make [SEP] the argmax everywhere: the caption is empty and finished
        model.heads.mlm_head.bias[TOKENIZER.sep_id] = 1e4
    got = pipe.caption_tokens(pipe.encode(image))
    assert got.token_ids == () and got.finished and pipe.caption(image) == ""


def test_graphs_named_map_and_missing():
    graphs = Graphs.of(_model())
    seen = []
    wrapped = graphs.map(lambda name, g: (lambda *a: seen.append(name) or g(*a)))
    pipe = Pipeline(CFG, TOKENIZER, Vocabularies.placeholder(CFG), wrapped)
    pipe.caption(_images()[0])
    assert seen[0] == "vision" and set(seen[1:]) == {"caption_step"}
    with pytest.raises(ValueError, match="graphs \\['vqa'\\] are missing"):
        Graphs.named({n: g for n, g in graphs.modules().items() if n != "vqa"})


def test_packing_and_the_refusals():
    pipe = _pipeline(_model())
    ids, mask = pipe.pack("a red circle")
    assert ids.dtype == torch.int64 and ids.shape == mask.shape == (1, CFG.text.max_text_len)
    assert ids[0, : 5].tolist() == [TOKENIZER.cls_id, *TOKENIZER.encode("a red circle"), TOKENIZER.sep_id]
    assert mask[0].tolist() == [1.0] * 5 + [0.0] * 5 and ids[0, 5:].tolist() == [TOKENIZER.pad_id] * 5
    with pytest.raises(InputError, match="question is 9 tokens, the model takes at most 8"):
        pipe.answer(_images()[0], "one two three four five six seven eight nine")
    with pytest.raises(InputError, match="text is '  '"):
        pipe.match(_images()[0], "  ")
    # Characters the tokenizer drops (control, zero-width) leave no words: refused, as the native core refuses them.
    for text in ("\x07\x01", "\u200b"):
        assert TOKENIZER.encode(text) == []
        with pytest.raises(InputError, match="expected a non-empty string with words"):
            pipe.pack(text)
    with pytest.raises(ConfigError, match="efficientvlm-tiny has no detector"):
        pipe.detect(_images()[0])
    with pytest.raises(ConfigError, match="answers vocabulary has 2 entries, the model predicts 7"):
        Pipeline(CFG, TOKENIZER, Vocabularies(("yes", "no")), pipe.graphs)
