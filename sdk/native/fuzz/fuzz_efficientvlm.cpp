// libFuzzer target: the EfficientVLM host steps (src/efficientvlm.cpp). The first byte picks the part:
//   0  manifest.json text for mvlm_evlm_config_parse: accepted means a config mvlm_evlm_config_check accepts,
//      refused means MVLM_BAD_FILE with a message;
//   1  Pillow-exact bicubic resize: header (format, width-1, height-1, row padding, S-1, uniform) then pixels
//      (repeated). Beyond "no crash": an image of one colour resizes to exactly that colour (the fixed-point
//      weights of every output pixel sum to one), and preprocessing gives (v / 255 - mean) / std of the resize;
//   2  text packing and greedy decoding with the committed EfficientVLM build's config and vocabulary: a packed
//      text is [CLS] ids [SEP] [PAD]..., its mask 1 exactly there; the step callback fills logits from the input
//      (NaN and infinities included) and decoding stops with tokens inside the vocabulary or one clean error.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "minivlm/minivlm.h"

static const mvlm_evlm_config& config() {
  static mvlm_evlm_config c = [] {
    mvlm_evlm_config out{};
    if (mvlm_evlm_config_load(MINIVLM_FUZZ_EVLM_MANIFEST, &out) != MVLM_OK) abort();
    return out;
  }();
  return c;
}

static const mvlm_tokenizer* tokenizer() {
  static mvlm_tokenizer* t = [] {
    mvlm_tokenizer* out = nullptr;
    if (mvlm_tokenizer_load(MINIVLM_FUZZ_EVLM_VOCAB, &out) != MVLM_OK) abort();
    return out;
  }();
  return t;
}

static void parse_config(const uint8_t* data, size_t size) {
  mvlm_evlm_config c{};
  const mvlm_status s = mvlm_evlm_config_parse(reinterpret_cast<const char*>(data), size, &c);
  if (s == MVLM_OK) {
    if (mvlm_evlm_config_check(&c) != MVLM_OK) abort();
  } else if (s != MVLM_BAD_FILE || mvlm_last_error()[0] == '\0') {
    abort();
  }
}

static void resize(const uint8_t* data, size_t size) {
  if (size < 6) return;
  const int format = data[0] % 4, channels = format == MVLM_PIXELS_RGBA8 || format == MVLM_PIXELS_BGRA8 ? 4 : 3;
  const int32_t width = 1 + data[1] % 80, height = 1 + data[2] % 80, s = 1 + data[4] % 64;
  const size_t row_bytes = static_cast<size_t>(width) * channels + data[3] % 8;
  const bool uniform = data[5] & 1;
  data += 6, size -= 6;
  if (size == 0) return;
  std::vector<uint8_t> pixels(row_bytes * height);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uniform ? data[(i % row_bytes) % channels % size] : data[i % size];
  std::vector<uint8_t> out(3 * static_cast<size_t>(s) * s);
  if (mvlm_evlm_resize(s, pixels.data(), width, height, row_bytes, format, out.data(), out.size()) != MVLM_OK) abort();
  if (uniform) {  // every pixel is the first one's colour, in RGB order
    const int source[3] = {format == MVLM_PIXELS_RGB8 || format == MVLM_PIXELS_RGBA8 ? 0 : 2, 1,
                           format == MVLM_PIXELS_RGB8 || format == MVLM_PIXELS_RGBA8 ? 2 : 0};
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] != pixels[source[i % 3]]) abort();
    }
  }
  if (mvlm_evlm_resize(s, pixels.data(), width, height, row_bytes, format, out.data(), out.size() - 1) != MVLM_INVALID_ARGUMENT) abort();  // a fixed size: no retry
  mvlm_evlm_config c = config();
  c.image_size = s;
  std::vector<float> images(out.size());
  if (mvlm_evlm_preprocess(&c, pixels.data(), width, height, row_bytes, format, images.data(), images.size()) != MVLM_OK) abort();
  const size_t plane = static_cast<size_t>(s) * s;
  for (size_t ch = 0; ch < 3; ++ch) {
    for (size_t p = 0; p < plane; ++p) {
      const float want = static_cast<float>((out[p * 3 + ch] / 255.0 - c.pixel_mean[ch]) / c.pixel_std[ch]);
      if (std::fabs(images[ch * plane + p] - want) > 1e-5f * (1.0f + std::fabs(want))) abort();
    }
  }
}

struct Steps {
  const uint8_t* data;
  size_t size;
  size_t at = 0;
  int32_t calls = 0;
};

// Fills token_logits from the fuzz input: mostly small numbers, sometimes NaN, infinities or a failure.
static int32_t step(void* user, const mvlm_evlm_step_request* request) {
  Steps& s = *static_cast<Steps*>(user);
  const mvlm_evlm_config& c = config();
  if (request->step < 1 || request->step >= c.max_text_len || request->token_mask[request->step - 1] != 1.0f) abort();
  ++s.calls;
  const size_t count = static_cast<size_t>(c.max_text_len) * c.vocab_size;
  for (size_t i = 0; i < count; ++i) request->token_logits[i] = 0.0f;
  float* out = request->token_logits + static_cast<size_t>(request->step - 1) * c.vocab_size;
  for (int k = 0; k < 4 && s.size; ++k) {  // a few peaks per step, at ids the input chooses
    const uint8_t a = s.data[s.at++ % s.size], b = s.data[s.at++ % s.size], v = s.data[s.at++ % s.size];
    if (a == 0xFF && b == 0xFF) return 1;  // the runtime failed
    const size_t id = (static_cast<size_t>(a) << 8 | b) % c.vocab_size;
    out[id] = v == 0xFE ? NAN : v == 0xFD ? INFINITY : static_cast<float>(v) - 100.0f;
  }
  return 0;
}

static void text(const uint8_t* data, size_t size) {
  const mvlm_evlm_config& c = config();
  const size_t t = static_cast<size_t>(c.max_text_len);
  std::vector<int64_t> ids(t);
  std::vector<float> mask(t);
  if (size == 0) return;
  const size_t length = data[0] % size;  // a length byte, the text, then the step callback's bytes
  const mvlm_status s = mvlm_evlm_pack_text(tokenizer(), &c, reinterpret_cast<const char*>(data + 1), length, ids.data(), mask.data());
  if (s == MVLM_OK) {
    size_t n = 0;
    while (n < t && mask[n] == 1.0f) ++n;
    if (n < 2 || ids[0] != c.cls_id || ids[n - 1] != c.sep_id) abort();
    for (size_t i = 0; i < t; ++i) {
      if (ids[i] < 0 || ids[i] >= c.vocab_size || (i >= n && (mask[i] != 0.0f || ids[i] != c.pad_id))) abort();
    }
  } else if (s != MVLM_BAD_INPUT || mvlm_last_error()[0] == '\0') {
    abort();
  }
  Steps steps{data + 1 + length, size - 1 - length};
  mvlm_evlm_caption caption{};
  const mvlm_status d = mvlm_evlm_caption_decode(tokenizer(), &c, step, &steps, &caption);
  if (d == MVLM_OK) {
    if (caption.num_tokens < 0 || caption.num_tokens > c.max_text_len || steps.calls < 1) abort();
    for (int32_t i = 0; i < caption.num_tokens; ++i) {
      if (caption.token_ids[i] < 0 || caption.token_ids[i] >= c.vocab_size || caption.token_ids[i] == c.sep_id) abort();
    }
  } else if ((d != MVLM_BAD_INPUT && d != MVLM_CALLBACK_FAILED) || mvlm_last_error()[0] == '\0') {
    abort();
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  switch (data[0] % 3) {
    case 0: parse_config(data + 1, size - 1); break;
    case 1: resize(data + 1, size - 1); break;
    default: text(data + 1, size - 1); break;
  }
  return 0;
}
