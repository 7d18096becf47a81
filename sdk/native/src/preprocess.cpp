// Letterbox preprocessing, python_ref/preprocess.py: the same geometry, and torch's bilinear resize
// (`F.interpolate(mode="bilinear", align_corners=False)`, ATen UpSampleKernel.cpp: half-pixel source index
// clamped at 0, float32 weights) on float32 0..255 values, then (v / 255 - mean) / std in float32.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.hpp"

using minivlm::fail;
using minivlm::str;

namespace {

struct Axis {  // ATen compute_source_index_and_lambda, for one output index
  int64_t i0, i1;
  float l0, l1;
};

std::vector<Axis> axis_weights(int64_t in, int64_t out) {
  std::vector<Axis> w(static_cast<size_t>(out));
  const float ratio = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t o = 0; o < out; ++o) {
    Axis& a = w[static_cast<size_t>(o)];
    if (in == out) {
      a = {o, o, 1.0f, 0.0f};
      continue;
    }
    // ATen's `scale * (dst + 0.5) - 0.5` is compiled into a fused multiply-add in torch's AVX2/AVX-512 and ARM
    // kernels (one rounding); measured on python_ref's output, the two-rounding form is off by up to 1.4e-3 of a
    // pixel level, the fused one by one float32 ulp.
    float src = std::fma(ratio, static_cast<float>(o) + 0.5f, -0.5f);
    if (src < 0.0f) src = 0.0f;
    a.i0 = std::min(static_cast<int64_t>(std::floor(src)), in - 1);
    a.l1 = std::min(std::max(src - static_cast<float>(a.i0), 0.0f), 1.0f);
    a.i1 = a.i0 + (a.i0 < in - 1 ? 1 : 0);
    a.l0 = 1.0f - a.l1;
  }
  return w;
}

}  // namespace

extern "C" {

mvlm_status mvlm_preprocess(const mvlm_config* config, const uint8_t* pixels, int32_t width, int32_t height,
                            size_t row_bytes, int32_t pixel_format, float* out, size_t out_count,
                            mvlm_letterbox* letterbox) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    if (width < 1 || height < 1) {
      fail(MVLM_BAD_INPUT, "image is " + str(height) + "x" + str(width) + ", expected at least 1x1 pixels");
    }
    size_t channels = 0;
    int r = 0, g = 1, b = 2;
    switch (pixel_format) {
      case MVLM_PIXELS_RGB8: channels = 3; break;
      case MVLM_PIXELS_RGBA8: channels = 4; break;
      case MVLM_PIXELS_BGRA8: channels = 4, r = 2, b = 0; break;
      case MVLM_PIXELS_BGR8: channels = 3, r = 2, b = 0; break;
      default: fail(MVLM_INVALID_ARGUMENT, "pixel_format is " + str(pixel_format) + ", expected an MVLM_PIXELS_* value");
    }
    const size_t w = static_cast<size_t>(width);
    if (row_bytes < w * channels) {
      fail(MVLM_INVALID_ARGUMENT, "row_bytes is " + str(row_bytes) + ", a row of " + str(width) + " pixels needs " +
                                      str(w * channels));
    }
    minivlm::require(pixels, "pixels");
    minivlm::require(out, "out");
    const int64_t size = c.image_size;
    const size_t plane = static_cast<size_t>(size * size);
    if (out_count < 3 * plane) {
      fail(MVLM_INVALID_ARGUMENT, "out holds " + str(out_count) + " floats, (1, 3, " + str(size) + ", " + str(size) +
                                      ") needs " + str(3 * plane));
    }
    // Letterbox geometry, in double as Python computes it.
    const double scale = static_cast<double>(size) / static_cast<double>(std::max(height, width));
    const int64_t rh = std::min<int64_t>(std::max<int64_t>(1, static_cast<int64_t>(std::floor(height * scale + 0.5))), size);
    const int64_t rw = std::min<int64_t>(std::max<int64_t>(1, static_cast<int64_t>(std::floor(width * scale + 0.5))), size);
    const float mean[3] = {static_cast<float>(c.pixel_mean[0]), static_cast<float>(c.pixel_mean[1]),
                           static_cast<float>(c.pixel_mean[2])};
    const float stdev[3] = {static_cast<float>(c.pixel_std[0]), static_cast<float>(c.pixel_std[1]),
                            static_cast<float>(c.pixel_std[2])};
    const int source[3] = {r, g, b};
    std::memset(out, 0, 3 * plane * sizeof(float));
    const std::vector<Axis> ys = axis_weights(height, rh), xs = axis_weights(width, rw);
    auto at = [&](int64_t y, int64_t x, int ch) {
      return static_cast<float>(pixels[static_cast<size_t>(y) * row_bytes + static_cast<size_t>(x) * channels +
                                       static_cast<size_t>(source[ch])]);
    };
    for (int ch = 0; ch < 3; ++ch) {
      float* dst = out + static_cast<size_t>(ch) * plane;
      for (int64_t oy = 0; oy < rh; ++oy) {
        const Axis& ay = ys[static_cast<size_t>(oy)];
        for (int64_t ox = 0; ox < rw; ++ox) {
          const Axis& ax = xs[static_cast<size_t>(ox)];
          float v;
          if (rh == height && rw == width) {
            v = at(oy, ox, ch);  // python_ref skips the resize
          } else {
            const float w00 = ay.l0 * ax.l0, w01 = ay.l0 * ax.l1, w10 = ay.l1 * ax.l0, w11 = ay.l1 * ax.l1;
            v = at(ay.i0, ax.i0, ch) * w00 + at(ay.i0, ax.i1, ch) * w01 + at(ay.i1, ax.i0, ch) * w10 +
                at(ay.i1, ax.i1, ch) * w11;
          }
          dst[oy * size + ox] = (v / 255.0f - mean[ch]) / stdev[ch];
        }
      }
    }
    if (letterbox) *letterbox = mvlm_letterbox{height, width, scale, static_cast<int32_t>(rh), static_cast<int32_t>(rw)};
  });
}

}  // extern "C"
