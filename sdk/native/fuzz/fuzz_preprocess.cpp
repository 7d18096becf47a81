// libFuzzer target: letterbox preprocessing. Six header bytes choose the pixel format, the image size, the row
// padding, the input size S and (0xFF) a one-float-short output buffer; the rest are the pixels (repeated). Beyond "no crash": the letterbox
// fills S on its long side, every output of the image part lies between the normalised darkest and brightest
// input value of its channel (bilinear weights are a convex combination), and the padding is exactly 0.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "minivlm/minivlm.h"

static const mvlm_config& base() {
  static mvlm_config c = [] {
    mvlm_manifest* m = nullptr;
    mvlm_config out{};
    if (mvlm_manifest_load(MINIVLM_FUZZ_MANIFEST, &m) != MVLM_OK || mvlm_manifest_config(m, &out) != MVLM_OK) abort();
    mvlm_manifest_free(m);
    return out;
  }();
  return c;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 6) return 0;
  const int format = data[0] % 4, channels = format == MVLM_PIXELS_RGBA8 || format == MVLM_PIXELS_BGRA8 ? 4 : 3;
  const int32_t width = 1 + data[1] % 96, height = 1 + data[2] % 96;
  const size_t row_bytes = static_cast<size_t>(width) * channels + data[3] % 8;
  mvlm_config c = base();
  c.image_size = 1 + data[4] % 128;
  const int source[3] = {format == MVLM_PIXELS_RGB8 || format == MVLM_PIXELS_RGBA8 ? 0 : 2, 1,
                         format == MVLM_PIXELS_RGB8 || format == MVLM_PIXELS_RGBA8 ? 2 : 0};
  std::vector<uint8_t> pixels(row_bytes * static_cast<size_t>(height));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = size > 6 ? data[6 + i % (size - 6)] : 0;
  const size_t s = static_cast<size_t>(c.image_size), plane = s * s;
  std::vector<float> out(3 * plane, -1.0f);
  mvlm_letterbox box{};
  if (mvlm_preprocess(&c, pixels.data(), width, height, row_bytes, format, out.data(), out.size() - (data[5] == 0xFF),
                      &box) != MVLM_OK) {
    if (data[5] != 0xFF) abort();  // only the deliberately short output buffer may fail
    return 0;
  }
  if (data[5] == 0xFF) abort();
  if (std::max(box.resized_height, box.resized_width) != c.image_size || box.resized_height < 1 || box.resized_width < 1)
    abort();
  for (int ch = 0; ch < 3; ++ch) {
    uint8_t lo = 255, hi = 0;
    for (int32_t y = 0; y < height; ++y) {
      for (int32_t x = 0; x < width; ++x) {
        const uint8_t v = pixels[static_cast<size_t>(y) * row_bytes + static_cast<size_t>(x) * channels + source[ch]];
        lo = std::min(lo, v), hi = std::max(hi, v);
      }
    }
    const float mean = static_cast<float>(c.pixel_mean[ch]), stdev = static_cast<float>(c.pixel_std[ch]);
    const float a = (lo / 255.0f - mean) / stdev, b = (hi / 255.0f - mean) / stdev, eps = 1e-4f;
    for (size_t y = 0; y < s; ++y) {
      for (size_t x = 0; x < s; ++x) {
        const float v = out[ch * plane + y * s + x];
        const bool image = y < static_cast<size_t>(box.resized_height) && x < static_cast<size_t>(box.resized_width);
        if (image ? !(v >= std::min(a, b) - eps && v <= std::max(a, b) + eps) : v != 0.0f) abort();
      }
    }
  }
  return 0;
}
