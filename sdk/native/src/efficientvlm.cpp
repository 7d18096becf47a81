// EfficientVLM's host steps: python_ref/efficientvlm/preprocess.py (Pillow's bicubic resample, ported from
// Pillow's src/libImaging/Resample.c through python_ref's NumPy port, whose float64 sums it repeats), and
// python_ref/efficientvlm/pipeline.py (text packing, the caption prompt, greedy decoding over caption_step).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common.hpp"
#include "handles.hpp"
#include "json.hpp"
#include "json_fields.hpp"
#include "tokenizer.hpp"

using minivlm::fail;
using minivlm::require;
using minivlm::str;
using minivlm::json::Value;

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed-point fraction bits for 8-bit images
constexpr double kBicubicA = -0.5;          // Keys' cubic parameter, as Pillow's bicubic_filter
constexpr double kBicubicSupport = 2.0;
constexpr const char* kCaptionPrompt = "a picture of ";  // X-VLM's prompt (python_ref/efficientvlm/generate.py)

double bicubic(double x) {  // Pillow's bicubic_filter
  x = std::fabs(x);
  if (x < 1.0) return ((kBicubicA + 2.0) * x - (kBicubicA + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * kBicubicA;
  return 0.0;
}

// NumPy's float64 add-reduce of a contiguous array (pairwise summation, numpy/core/src/umath/loops_utils.h), as
// python_ref's `k.sum()` normalises the taps: a plain loop rounds differently for more than 8 taps.
double pairwise_sum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

struct Taps {  // one output pixel of a pass: its first input index and fixed-point weights
  int64_t first;
  std::vector<int64_t> weights;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis (python_ref `_coefficients`).
std::vector<Taps> coefficients(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filterscale;
  const double inv_filterscale = 1.0 / filterscale;  // multiplied, as Pillow does: dividing rounds differently
  std::vector<Taps> taps(static_cast<size_t>(out_size));
  std::vector<double> k;
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);  // C truncation
    const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
    k.assign(static_cast<size_t>(std::max<int64_t>(xmax, 0)), 0.0);
    for (int64_t x = 0; x < xmax; ++x) {
      k[static_cast<size_t>(x)] = bicubic((static_cast<double>(x) + static_cast<double>(xmin) - center + 0.5) * inv_filterscale);
    }
    const double total = pairwise_sum(k.data(), k.size());
    Taps& t = taps[static_cast<size_t>(xx)];
    t.first = xmin;
    for (double& v : k) {
      if (total != 0.0) v = v / total;
      const double fixed = v * static_cast<double>(int64_t{1} << kPrecisionBits);
      t.weights.push_back(static_cast<int64_t>(std::trunc(v < 0 ? fixed - 0.5 : fixed + 0.5)));
    }
  }
  return taps;
}

uint8_t clip8(int64_t total) {
  if (total < 0) return 0;  // before the shift: >> of a negative value is implementation-defined before C++20
  const int64_t v = (total + (int64_t{1} << (kPrecisionBits - 1))) >> kPrecisionBits;
  return static_cast<uint8_t>(std::min<int64_t>(v, 255));
}

// One pass along the lines of `src`: `lines` lines of `in` RGB pixels, a pixel every `step` bytes, a line every
// `stride` bytes -> `lines` x `out` RGB pixels, contiguous.
std::vector<uint8_t> resample(const uint8_t* src, size_t lines, size_t stride, size_t step, size_t in, size_t out,
                              const int source[3]) {
  const std::vector<Taps> taps = coefficients(static_cast<int64_t>(in), static_cast<int64_t>(out));
  std::vector<uint8_t> dst(lines * out * 3);
  for (size_t line = 0; line < lines; ++line) {
    const uint8_t* row = src + line * stride;
    for (size_t o = 0; o < out; ++o) {
      const Taps& t = taps[o];
      for (int ch = 0; ch < 3; ++ch) {
        int64_t total = 0;
        for (size_t k = 0; k < t.weights.size(); ++k) {
          total += t.weights[k] * row[(static_cast<size_t>(t.first) + k) * step + static_cast<size_t>(source[ch])];
        }
        dst[(line * out + o) * 3 + static_cast<size_t>(ch)] = clip8(total);
      }
    }
  }
  return dst;
}

// Pillow-exact bicubic resize to size x size RGB (python_ref `resize_bicubic`): horizontal pass, then vertical,
// each skipped when that side already has `size` pixels.
std::vector<uint8_t> resize(int32_t size, const uint8_t* pixels, int32_t width, int32_t height, size_t row_bytes,
                            int32_t pixel_format) {
  if (size < 1) fail(MVLM_INVALID_ARGUMENT, "size is " + str(size) + ", expected at least 1");
  if (width < 1 || height < 1) {
    fail(MVLM_BAD_INPUT, "image is " + str(height) + "x" + str(width) + ", expected at least 1x1 pixels");
  }
  size_t channels = 0;
  int source[3] = {0, 1, 2};
  switch (pixel_format) {
    case MVLM_PIXELS_RGB8: channels = 3; break;
    case MVLM_PIXELS_RGBA8: channels = 4; break;
    case MVLM_PIXELS_BGRA8: channels = 4, source[0] = 2, source[2] = 0; break;
    case MVLM_PIXELS_BGR8: channels = 3, source[0] = 2, source[2] = 0; break;
    default: fail(MVLM_INVALID_ARGUMENT, "pixel_format is " + str(pixel_format) + ", expected an MVLM_PIXELS_* value");
  }
  const size_t w = static_cast<size_t>(width), h = static_cast<size_t>(height), s = static_cast<size_t>(size);
  if (row_bytes < w * channels) {
    fail(MVLM_INVALID_ARGUMENT, "row_bytes is " + str(row_bytes) + ", a row of " + str(width) + " pixels needs " +
                                    str(w * channels));
  }
  require(pixels, "pixels");
  const int rgb[3] = {0, 1, 2};
  // The image as tightly packed RGB rows, after the horizontal pass if there is one.
  std::vector<uint8_t> rows;
  if (w != s) {
    rows = resample(pixels, h, row_bytes, channels, w, s, source);
  } else {
    rows.resize(h * s * 3);
    for (size_t y = 0; y < h; ++y) {
      for (size_t x = 0; x < s; ++x) {
        for (int ch = 0; ch < 3; ++ch) rows[(y * s + x) * 3 + static_cast<size_t>(ch)] = pixels[y * row_bytes + x * channels + static_cast<size_t>(source[ch])];
      }
    }
  }
  if (h == s) return rows;
  // Vertical pass: each column is a line (a pixel every row, columns 3 bytes apart); the result is (s columns, s).
  const std::vector<uint8_t> columns = resample(rows.data(), s, 3, s * 3, h, s, rgb);
  std::vector<uint8_t> out(s * s * 3);
  for (size_t x = 0; x < s; ++x) {
    for (size_t y = 0; y < s; ++y) std::memcpy(&out[(y * s + x) * 3], &columns[(x * s + y) * 3], 3);
  }
  return out;
}

using minivlm::json::Fields;  // manifest.json's fields by pointer (json_fields.hpp)

void check_config(const mvlm_evlm_config& c) {
  auto positive = [](int32_t v, const char* name) {
    if (v < 1) fail(MVLM_INVALID_ARGUMENT, std::string("config ") + name + " is " + str(v) + ", expected at least 1");
  };
  positive(c.image_size, "image_size");
  positive(c.num_image_tokens, "num_image_tokens");
  positive(c.vision_width, "vision_width");
  positive(c.embed_dim, "embed_dim");
  positive(c.vocab_size, "vocab_size");
  positive(c.num_answers, "num_answers");
  if (c.max_text_len < 3 || c.max_text_len > MVLM_MAX_CAPTION_TOKENS) {
    fail(MVLM_INVALID_ARGUMENT, "config max_text_len is " + str(c.max_text_len) + ", expected 3.." +
                                    str(MVLM_MAX_CAPTION_TOKENS));
  }
  for (int i = 0; i < 3; ++i) {
    if (!std::isfinite(c.pixel_mean[i]) || !(c.pixel_std[i] > 0) || !std::isfinite(c.pixel_std[i])) {
      fail(MVLM_INVALID_ARGUMENT, "config pixel_mean/pixel_std[" + str(i) + "] is " + minivlm::str_double(c.pixel_mean[i]) +
                                      "/" + minivlm::str_double(c.pixel_std[i]) + ", expected finite values and std > 0");
    }
  }
  const char* names[5] = {"pad_id", "unk_id", "cls_id", "sep_id", "mask_id"};
  const int64_t ids[5] = {c.pad_id, c.unk_id, c.cls_id, c.sep_id, c.mask_id};
  for (int k = 0; k < 5; ++k) {
    if (ids[k] < 0 || ids[k] >= c.vocab_size) {
      fail(MVLM_INVALID_ARGUMENT, std::string("config ") + names[k] + " is " + str(ids[k]) + ", outside the vocabulary [0, " +
                                      str(c.vocab_size) + ")");
    }
  }
}

const mvlm_evlm_config& checked(const mvlm_evlm_config* config) {
  require(config, "config");
  check_config(*config);
  return *config;
}

mvlm_evlm_config read_config(const std::string& text, const std::string& what) {
  const Value root = minivlm::json::parse(text, what);
  const Fields f(root, what);
  const Value* family = root.get("family");
  if (!family) fail(MVLM_BAD_FILE, what + " lacks /family (an EfficientVLM build says \"efficientvlm\")");
  if (family->type != Value::Type::String || family->string != "efficientvlm") {
    const bool plain = family->type == Value::Type::String && family->string.size() <= 40 &&
                       std::all_of(family->string.begin(), family->string.end(), [](unsigned char ch) { return ch >= 0x20 && ch < 0x7f; });
    fail(MVLM_BAD_FILE, what + " /family is " + (plain ? "'" + family->string + "'" : std::string("not a plain string")) +
                            ", expected 'efficientvlm'");
  }
  const std::string model = "/model/config", vision = model + "/vision", text_cfg = model + "/text";
  mvlm_evlm_config c{};
  c.image_size = f.integer(vision + "/image_size");
  f.numbers(vision + "/pixel_mean", c.pixel_mean, 3, 3, "(RGB)");
  f.numbers(vision + "/pixel_std", c.pixel_std, 3, 3, "(RGB)");
  const int32_t patch = f.integer(vision + "/patch_size");
  if (patch < 1 || c.image_size < 1 || c.image_size % patch) {
    fail(MVLM_BAD_FILE, what + " " + vision + ": image_size " + str(c.image_size) + " is not a multiple of patch_size " +
                            str(patch));
  }
  c.num_image_tokens = (c.image_size / patch) * (c.image_size / patch) + 1;
  c.vision_width = f.integer(vision + "/width");
  c.embed_dim = f.integer(model + "/embed_dim");
  c.max_text_len = f.integer(text_cfg + "/max_text_len");
  c.vocab_size = f.integer(text_cfg + "/vocab_size");
  c.num_answers = f.integer(model + "/num_answers");
  const char* const names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  int64_t* ids[5] = {&c.pad_id, &c.unk_id, &c.cls_id, &c.sep_id, &c.mask_id};
  for (int k = 0; k < 5; ++k) *ids[k] = f.integer(std::string("/tokenizer/specials/") + names[k]);
  if (minivlm::guard([&] { check_config(c); }) != MVLM_OK) {
    fail(MVLM_BAD_FILE, what + " describes an inconsistent model: " + mvlm_last_error());
  }
  return c;
}

void check_tokenizer(const minivlm::Tokenizer& t, const mvlm_evlm_config& c) {
  if (t.vocab_size() > c.vocab_size || t.cls_id() != c.cls_id || t.sep_id() != c.sep_id || t.pad_id() != c.pad_id) {
    fail(MVLM_INVALID_ARGUMENT, "tokenizer has " + str(t.vocab_size()) + " tokens ([CLS] " + str(t.cls_id()) + ", [SEP] " +
                                    str(t.sep_id()) + ", [PAD] " + str(t.pad_id()) + "), the model " + str(c.vocab_size) +
                                    " ([CLS] " + str(c.cls_id) + ", [SEP] " + str(c.sep_id) + ", [PAD] " + str(c.pad_id) + ")");
  }
}

// `ids` padded with [PAD] to max_text_len, the mask 1 on them.
void padded(const std::vector<int64_t>& ids, const mvlm_evlm_config& c, int64_t* input_ids, float* token_mask) {
  const size_t length = static_cast<size_t>(c.max_text_len);
  for (size_t i = 0; i < length; ++i) {
    input_ids[i] = i < ids.size() ? ids[i] : c.pad_id;
    token_mask[i] = i < ids.size() ? 1.0f : 0.0f;
  }
}

std::vector<int64_t> prompt_ids(const minivlm::Tokenizer& t) {
  std::vector<int64_t> ids{t.cls_id()};
  const std::vector<int64_t> words = t.encode(kCaptionPrompt);
  ids.insert(ids.end(), words.begin(), words.end());
  return ids;
}

// The text as a one-line quote for messages: at most 40 bytes, control characters as '?'.
std::string quoted(std::string_view text) {
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < 40; ++i) out.push_back(static_cast<unsigned char>(text[i]) < 0x20 ? '?' : text[i]);
  return out + (text.size() > 40 ? "...'" : "'");
}

}  // namespace

extern "C" {

mvlm_status mvlm_evlm_config_check(const mvlm_evlm_config* config) {
  return minivlm::guard([&] { checked(config); });
}

mvlm_status mvlm_evlm_config_load(const char* path, mvlm_evlm_config* config) {
  return minivlm::guard([&] {
    require(path, "path");
    require(config, "config");
    std::filesystem::path file(path);
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) file /= "manifest.json";
    *config = read_config(minivlm::read_file(file.string(), "manifest"), file.string());
  });
}

mvlm_status mvlm_evlm_config_parse(const char* text, size_t length, mvlm_evlm_config* config) {
  return minivlm::guard([&] {
    require(config, "config");
    if (length > 0) require(text, "text");
    *config = read_config(std::string(length ? text : "", length), "manifest.json");
  });
}

mvlm_status mvlm_evlm_resize(int32_t size, const uint8_t* pixels, int32_t width, int32_t height, size_t row_bytes,
                             int32_t pixel_format, uint8_t* out, size_t out_count) {
  return minivlm::guard([&] {
    require(out, "out");
    const size_t need = 3 * static_cast<size_t>(std::max(size, 0)) * static_cast<size_t>(std::max(size, 0));
    if (out_count < need) {
      fail(MVLM_INVALID_ARGUMENT, "out holds " + str(out_count) + " bytes, (" + str(size) + ", " + str(size) + ", 3) needs " + str(need));
    }
    const std::vector<uint8_t> resized = resize(size, pixels, width, height, row_bytes, pixel_format);
    std::memcpy(out, resized.data(), resized.size());
  });
}

mvlm_status mvlm_evlm_preprocess(const mvlm_evlm_config* config, const uint8_t* pixels, int32_t width, int32_t height,
                                 size_t row_bytes, int32_t pixel_format, float* out, size_t out_count) {
  return minivlm::guard([&] {
    const mvlm_evlm_config& c = checked(config);
    require(out, "out");
    const size_t plane = static_cast<size_t>(c.image_size) * static_cast<size_t>(c.image_size);
    if (out_count < 3 * plane) {
      fail(MVLM_INVALID_ARGUMENT, "out holds " + str(out_count) + " floats, (1, 3, " + str(c.image_size) + ", " +
                                      str(c.image_size) + ") needs " + str(3 * plane));
    }
    const std::vector<uint8_t> resized = resize(c.image_size, pixels, width, height, row_bytes, pixel_format);
    for (size_t ch = 0; ch < 3; ++ch) {
      // torchvision's ToTensor and Normalize in float32, as python_ref `_normalise`.
      const float mean = static_cast<float>(c.pixel_mean[ch]), stdev = static_cast<float>(c.pixel_std[ch]);
      float* dst = out + ch * plane;
      for (size_t i = 0; i < plane; ++i) dst[i] = (static_cast<float>(resized[i * 3 + ch]) / 255.0f - mean) / stdev;
    }
  });
}

mvlm_status mvlm_evlm_pack_text(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config, const char* text,
                                size_t length, int64_t* input_ids, float* token_mask) {
  return minivlm::guard([&] {
    require(tokenizer, "tokenizer");
    const mvlm_evlm_config& c = checked(config);
    require(input_ids, "input_ids");
    require(token_mask, "token_mask");
    if (length > 0) require(text, "text");
    const minivlm::Tokenizer& t = tokenizer->tokenizer;
    check_tokenizer(t, c);
    const std::string_view view(length ? text : "", length);
    const std::vector<int64_t> words = t.encode(view);
    if (words.empty()) fail(MVLM_BAD_INPUT, "text is " + quoted(view) + ", expected a non-empty string with words");
    const size_t budget = static_cast<size_t>(c.max_text_len - 2);
    if (words.size() > budget) {
      fail(MVLM_BAD_INPUT, "text is " + str(words.size()) + " tokens, the model takes at most " + str(budget) +
                               " (max_text_len " + str(c.max_text_len) + " minus [CLS] and [SEP])");
    }
    std::vector<int64_t> ids{c.cls_id};
    ids.insert(ids.end(), words.begin(), words.end());
    ids.push_back(c.sep_id);
    padded(ids, c, input_ids, token_mask);
  });
}

mvlm_status mvlm_evlm_caption_prompt(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config,
                                     int64_t* input_ids, float* token_mask, int32_t* prompt_length) {
  return minivlm::guard([&] {
    require(tokenizer, "tokenizer");
    const mvlm_evlm_config& c = checked(config);
    require(input_ids, "input_ids");
    require(token_mask, "token_mask");
    check_tokenizer(tokenizer->tokenizer, c);
    const std::vector<int64_t> ids = prompt_ids(tokenizer->tokenizer);
    if (ids.size() >= static_cast<size_t>(c.max_text_len)) {
      fail(MVLM_INVALID_ARGUMENT, "prompt has " + str(ids.size()) + " tokens; it needs 1 to " + str(c.max_text_len - 1) +
                                      " (max_text_len " + str(c.max_text_len) + ")");
    }
    padded(ids, c, input_ids, token_mask);
    if (prompt_length) *prompt_length = static_cast<int32_t>(ids.size());
  });
}

mvlm_status mvlm_evlm_caption_decode(const mvlm_tokenizer* tokenizer, const mvlm_evlm_config* config,
                                     mvlm_evlm_step_fn step, void* user_data, mvlm_evlm_caption* caption) {
  return minivlm::guard([&] {
    require(tokenizer, "tokenizer");
    const mvlm_evlm_config& c = checked(config);
    require(caption, "caption");
    if (step == nullptr) fail(MVLM_INVALID_ARGUMENT, "step is NULL");
    *caption = mvlm_evlm_caption{};
    check_tokenizer(tokenizer->tokenizer, c);
    const std::vector<int64_t> prefix = prompt_ids(tokenizer->tokenizer);
    const size_t length = static_cast<size_t>(c.max_text_len), vocab = static_cast<size_t>(c.vocab_size);
    if (prefix.size() >= length) {
      fail(MVLM_INVALID_ARGUMENT, "prompt has " + str(prefix.size()) + " tokens; it needs 1 to " + str(length - 1) +
                                      " (max_text_len " + str(length) + ")");
    }
    std::vector<int64_t> ids(length);
    std::vector<float> mask(length);
    padded(prefix, c, ids.data(), mask.data());
    std::vector<float> logits(length * vocab);
    for (size_t t = prefix.size(); t < length; ++t) {
      std::fill(mask.begin(), mask.begin() + static_cast<std::ptrdiff_t>(t), 1.0f);
      std::fill(logits.begin(), logits.end(), std::nanf(""));  // a callback that writes nothing is caught below
      const mvlm_evlm_step_request request{static_cast<int32_t>(t), ids.data(), mask.data(), logits.data()};
      const int32_t rc = step(user_data, &request);
      if (rc != 0) fail(MVLM_CALLBACK_FAILED, "the caption_step callback returned " + str(rc) + " at step " + str(t));
      const float* row = logits.data() + (t - 1) * vocab;
      size_t best = 0;
      for (size_t v = 0; v < vocab; ++v) {
        if (!std::isfinite(row[v])) {
          fail(MVLM_BAD_INPUT, "caption_step token_logits[0][" + str(t - 1) + "][" + str(v) + "] is not finite at step " + str(t));
        }
        if (row[v] > row[best]) best = v;  // the first maximum, as torch.argmax
      }
      const int64_t token = static_cast<int64_t>(best);
      ids[t] = token;
      if (token == c.sep_id) {
        caption->finished = 1;
        return;
      }
      caption->token_ids[caption->num_tokens++] = token;
    }
  });
}

}  // extern "C"
