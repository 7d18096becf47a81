#include "boxes.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common.hpp"

namespace minivlm {

// torch.sort(descending=True): NaN counts as the largest value.
bool greater(float a, float b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

// torch.sort ascending: NaN last.
bool less(float a, float b) {
  if (std::isnan(b)) return !std::isnan(a);
  if (std::isnan(a)) return false;
  return a < b;
}

float clamp(float v, float lo, float hi) {  // torch.clamp: NaN stays NaN
  if (std::isnan(v)) return v;
  return v < lo ? lo : (v > hi ? hi : v);
}

Box clip(Box b, float size) {
  return {clamp(b.x1, 0.0f, size), clamp(b.y1, 0.0f, size), clamp(b.x2, 0.0f, size), clamp(b.y2, 0.0f, size)};
}

std::vector<int64_t> stable_descending(const float* scores, size_t n) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return greater(scores[a], scores[b]); });
  return order;
}

Box decode_box(const float* d, const float* r, const float w[4], float clip_value) {
  const float rw = r[2] - r[0], rh = r[3] - r[1];
  const float rx = r[0] + 0.5f * rw, ry = r[1] + 0.5f * rh;
  const float dx = d[0] / w[0], dy = d[1] / w[1];
  float dw = d[2] / w[2], dh = d[3] / w[3];
  if (!std::isnan(dw) && dw > clip_value) dw = clip_value;
  if (!std::isnan(dh) && dh > clip_value) dh = clip_value;
  const float cx = dx * rw + rx, cy = dy * rh + ry;
  const float half_w = 0.5f * std::exp(dw) * rw, half_h = 0.5f * std::exp(dh) * rh;
  return {cx - half_w, cy - half_h, cx + half_w, cy + half_h};
}

namespace {

// np.minimum / np.maximum: NaN in either argument gives NaN.
float nan_min(float a, float b) { return std::isnan(a) || std::isnan(b) ? std::nanf("") : std::min(a, b); }
float nan_max(float a, float b) { return std::isnan(a) || std::isnan(b) ? std::nanf("") : std::max(a, b); }

}  // namespace

std::vector<size_t> greedy_nms(const std::vector<Box>& boxes, float iou_threshold) {
  const size_t n = boxes.size();
  std::vector<float> areas(n);
  for (size_t i = 0; i < n; ++i) areas[i] = (boxes[i].x2 - boxes[i].x1) * (boxes[i].y2 - boxes[i].y1);
  std::vector<char> suppressed(n, 0);
  std::vector<size_t> keep;
  for (size_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    keep.push_back(i);
    const Box& a = boxes[i];
    for (size_t j = i + 1; j < n; ++j) {
      const Box& b = boxes[j];
      // numpy: np.maximum(np.minimum(...) - np.maximum(...), 0) in float32; NaN IoU never suppresses.
      float w = nan_min(a.x2, b.x2) - nan_max(a.x1, b.x1);
      float h = nan_min(a.y2, b.y2) - nan_max(a.y1, b.y1);
      w = nan_max(w, 0.0f);
      h = nan_max(h, 0.0f);
      const float inter = w * h;
      const float iou = inter / (areas[i] + areas[j] - inter);
      if (iou > iou_threshold) suppressed[j] = 1;
    }
  }
  return keep;
}

std::vector<int64_t> nms(const std::vector<Box>& boxes, const float* scores, float iou_threshold) {
  const std::vector<int64_t> order = stable_descending(scores, boxes.size());
  std::vector<Box> sorted(boxes.size());
  for (size_t i = 0; i < order.size(); ++i) sorted[i] = boxes[static_cast<size_t>(order[i])];
  std::vector<int64_t> out;
  for (size_t k : greedy_nms(sorted, iou_threshold)) out.push_back(order[k]);
  return out;
}

std::vector<int64_t> batched_nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                 const std::vector<int64_t>& groups, float iou_threshold) {
  std::vector<int64_t> order = stable_descending(scores.data(), scores.size());
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return groups[a] < groups[b]; });
  std::vector<int64_t> kept;
  size_t start = 0;
  while (start < order.size()) {
    size_t end = start;
    while (end < order.size() && groups[order[end]] == groups[order[start]]) ++end;
    std::vector<Box> run;
    for (size_t k = start; k < end; ++k) run.push_back(boxes[static_cast<size_t>(order[k])]);
    for (size_t k : greedy_nms(run, iou_threshold)) kept.push_back(order[start + k]);
    start = end;
  }
  std::sort(kept.begin(), kept.end());
  std::stable_sort(kept.begin(), kept.end(), [&](int64_t a, int64_t b) { return greater(scores[a], scores[b]); });
  return kept;
}

}  // namespace minivlm

using minivlm::Box;
using minivlm::fail;
using minivlm::require;
using minivlm::str;

namespace {

const float kBoxClip = static_cast<float>(std::log(1000.0 / 16));  // torchvision BBOX_XFORM_CLIP, as float32

void coder_weights(const double in[4], float out[4]) {
  for (int k = 0; k < 4; ++k) out[k] = static_cast<float>(in[k]);
}

std::vector<int64_t> level_sizes(const mvlm_config& c) {
  std::vector<int64_t> sizes;
  for (int32_t i = 0; i < c.num_levels; ++i) {
    const int64_t cells = c.image_size / (int64_t{1} << (c.min_level + i));
    sizes.push_back(cells * cells * c.num_ratios);
  }
  return sizes;
}

}  // namespace

extern "C" {

mvlm_status mvlm_anchor_count(const mvlm_config* config, size_t* count, int64_t* sizes) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    require(count, "count");
    const std::vector<int64_t> per_level = level_sizes(c);
    *count = static_cast<size_t>(std::accumulate(per_level.begin(), per_level.end(), int64_t{0}));
    if (sizes) std::copy(per_level.begin(), per_level.end(), sizes);
  });
}

mvlm_status mvlm_make_anchors(const mvlm_config* config, float* anchors, size_t capacity_boxes) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    require(anchors, "anchors");
    const std::vector<int64_t> per_level = level_sizes(c);
    const size_t n = static_cast<size_t>(std::accumulate(per_level.begin(), per_level.end(), int64_t{0}));
    if (capacity_boxes < n) fail(MVLM_INVALID_ARGUMENT, "anchors holds " + str(capacity_boxes) + " boxes, " + str(n) + " needed");
    // python_ref make_anchors: float64 arithmetic, rounded to float32 at the end.
    float* out = anchors;
    for (int32_t level = 0; level < c.num_levels; ++level) {
      const int64_t stride = int64_t{1} << (c.min_level + level);
      const int64_t cells = c.image_size / stride;
      const double size = c.anchor_sizes[level];
      for (int64_t y = 0; y < cells; ++y) {
        const double cy = (static_cast<double>(y) + 0.5) * static_cast<double>(stride);
        for (int64_t x = 0; x < cells; ++x) {
          const double cx = (static_cast<double>(x) + 0.5) * static_cast<double>(stride);
          for (int32_t a = 0; a < c.num_ratios; ++a) {
            const double root = std::sqrt(c.aspect_ratios[a]);
            const double h = size * root, w = size / root;
            *out++ = static_cast<float>(cx + (-w) / 2);
            *out++ = static_cast<float>(cy + (-h) / 2);
            *out++ = static_cast<float>(cx + w / 2);
            *out++ = static_cast<float>(cy + h / 2);
          }
        }
      }
    }
  });
}

mvlm_status mvlm_decode_boxes(const float* deltas, const float* references, size_t n, const double weights[4],
                              float* boxes) {
  return minivlm::guard([&] {
    if (n == 0) return;
    require(deltas, "deltas");
    require(references, "references");
    require(weights, "weights");
    require(boxes, "boxes");
    float w[4];
    coder_weights(weights, w);
    for (size_t i = 0; i < n; ++i) {
      const Box b = minivlm::decode_box(deltas + 4 * i, references + 4 * i, w, kBoxClip);
      const float v[4] = {b.x1, b.y1, b.x2, b.y2};
      std::memcpy(boxes + 4 * i, v, sizeof(v));
    }
  });
}

mvlm_status mvlm_nms(const float* boxes, const float* scores, size_t n, double iou_threshold, int64_t* keep,
                     size_t* kept) {
  return minivlm::guard([&] {
    require(kept, "kept");
    *kept = 0;
    if (n == 0) return;
    require(boxes, "boxes");
    require(scores, "scores");
    require(keep, "keep");
    std::vector<Box> b(n);
    std::memcpy(b.data(), boxes, n * sizeof(Box));
    const std::vector<int64_t> out = minivlm::nms(b, scores, static_cast<float>(iou_threshold));
    std::copy(out.begin(), out.end(), keep);
    *kept = out.size();
  });
}

mvlm_status mvlm_select_proposals(const mvlm_config* config, const float* objectness, const float* deltas,
                                  const float* anchors, size_t num_anchors, float* proposals, uint8_t* valid) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    const std::vector<int64_t> per_level = level_sizes(c);
    const size_t n = static_cast<size_t>(std::accumulate(per_level.begin(), per_level.end(), int64_t{0}));
    if (num_anchors != n) {
      fail(MVLM_INVALID_ARGUMENT, "num_anchors is " + str(num_anchors) + ", the config's levels have " + str(n));
    }
    require(objectness, "objectness");
    require(deltas, "deltas");
    require(anchors, "anchors");
    require(proposals, "proposals");
    require(valid, "valid");
    float w[4];
    coder_weights(c.rpn_box_coder_weights, w);
    const float size = static_cast<float>(c.image_size);
    const float min_size = static_cast<float>(c.min_box_size);
    std::vector<Box> boxes;
    std::vector<float> scores;
    size_t offset = 0;
    for (int64_t level_size : per_level) {
      const size_t m = static_cast<size_t>(level_size);
      std::vector<int64_t> top = minivlm::stable_descending(objectness + offset, m);
      top.resize(std::min<size_t>(top.size(), static_cast<size_t>(c.pre_nms_top_n)));
      std::vector<Box> level_boxes;
      std::vector<float> level_scores;
      for (int64_t t : top) {
        const size_t i = offset + static_cast<size_t>(t);
        const Box b = minivlm::clip(minivlm::decode_box(deltas + 4 * i, anchors + 4 * i, w, kBoxClip), size);
        if (b.x2 - b.x1 >= min_size && b.y2 - b.y1 >= min_size) {
          level_boxes.push_back(b);
          level_scores.push_back(objectness[i]);
        }
      }
      for (int64_t k : minivlm::nms(level_boxes, level_scores.data(), static_cast<float>(c.rpn_nms_threshold))) {
        boxes.push_back(level_boxes[static_cast<size_t>(k)]);
        scores.push_back(level_scores[static_cast<size_t>(k)]);
      }
      offset += m;
    }
    std::vector<int64_t> best = minivlm::stable_descending(scores.data(), scores.size());
    const size_t k = static_cast<size_t>(c.post_nms_top_n);
    best.resize(std::min(best.size(), k));
    std::memset(proposals, 0, k * 4 * sizeof(float));
    std::memset(valid, 0, k);
    for (size_t i = 0; i < best.size(); ++i) {
      const Box& b = boxes[static_cast<size_t>(best[i])];
      const float v[4] = {b.x1, b.y1, b.x2, b.y2};
      std::memcpy(proposals + 4 * i, v, sizeof(v));
      valid[i] = 1;
    }
  });
}

mvlm_status mvlm_select_regions(const mvlm_config* config, const float* proposals, const uint8_t* valid,
                                size_t num_proposals, const float* class_logits, const float* box_deltas,
                                mvlm_regions* regions) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    require(regions, "regions");
    regions->count = 0;
    require(regions->boxes, "regions->boxes");
    require(regions->labels, "regions->labels");
    require(regions->scores, "regions->scores");
    require(regions->proposal_indices, "regions->proposal_indices");
    const size_t k_max = static_cast<size_t>(c.max_regions);
    std::memset(regions->boxes, 0, k_max * 4 * sizeof(float));
    std::memset(regions->labels, 0, k_max * sizeof(int64_t));
    std::memset(regions->scores, 0, k_max * sizeof(float));
    std::memset(regions->proposal_indices, 0, k_max * sizeof(int64_t));
    if (num_proposals == 0) return;
    require(proposals, "proposals");
    require(valid, "valid");
    require(class_logits, "class_logits");
    require(box_deltas, "box_deltas");
    const size_t nc = static_cast<size_t>(c.num_classes);
    float w[4];
    coder_weights(c.roi_box_coder_weights, w);
    const float threshold = static_cast<float>(c.score_threshold);
    const float size = static_cast<float>(c.image_size);
    // Candidates in row-major (proposal, class) order, background dropped.
    std::vector<int64_t> rows, labels;
    std::vector<float> scores;
    std::vector<Box> boxes;
    std::vector<float> probs(nc);
    for (size_t r = 0; r < num_proposals; ++r) {
      // torch.softmax over the classes: exp(x - max), then times 1 / sum.
      const float* logits = class_logits + r * nc;
      float max = logits[0];
      for (size_t j = 1; j < nc; ++j) max = std::isnan(logits[j]) || logits[j] > max ? logits[j] : max;
      float sum = 0.0f;
      for (size_t j = 0; j < nc; ++j) {
        probs[j] = std::exp(logits[j] - max);
        sum += probs[j];
      }
      const float inv = 1.0f / sum;
      for (size_t j = 1; j < nc; ++j) {
        const float p = probs[j] * inv;
        if (!valid[r] || !(p >= threshold)) continue;
        rows.push_back(static_cast<int64_t>(r));
        labels.push_back(static_cast<int64_t>(j));
        scores.push_back(p);
        boxes.push_back(minivlm::clip(minivlm::decode_box(box_deltas + (r * nc + j) * 4, proposals + r * 4, w, kBoxClip), size));
      }
    }
    std::vector<int64_t> keep = minivlm::batched_nms(boxes, scores, labels, static_cast<float>(c.roi_nms_threshold));
    keep.resize(std::min(keep.size(), k_max));
    if (c.region_order == MVLM_REGION_ORDER_LEFT_TO_RIGHT) {  // the kept set stays the best by score
      std::vector<float> centres;
      for (int64_t k : keep) centres.push_back((boxes[static_cast<size_t>(k)].x1 + boxes[static_cast<size_t>(k)].x2) * 0.5f);
      std::vector<size_t> order(keep.size());
      std::iota(order.begin(), order.end(), size_t{0});
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return minivlm::less(centres[a], centres[b]); });
      std::vector<int64_t> sorted;
      for (size_t o : order) sorted.push_back(keep[o]);
      keep = sorted;
    }
    for (size_t i = 0; i < keep.size(); ++i) {
      const size_t k = static_cast<size_t>(keep[i]);
      const float v[4] = {boxes[k].x1, boxes[k].y1, boxes[k].x2, boxes[k].y2};
      std::memcpy(regions->boxes + 4 * i, v, sizeof(v));
      regions->labels[i] = labels[k];
      regions->scores[i] = scores[k];
      regions->proposal_indices[i] = rows[k];
    }
    regions->count = static_cast<int32_t>(keep.size());
  });
}

mvlm_status mvlm_region_tokens(const mvlm_config* config, const mvlm_regions* regions, const float* features,
                               size_t num_proposals, const mvlm_letterbox* letterbox, float* tokens,
                               float* image_boxes) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    require(regions, "regions");
    require(letterbox, "letterbox");
    const int32_t k = regions->count;
    if (k < 0 || k > c.max_regions) {
      fail(MVLM_INVALID_ARGUMENT, "regions->count is " + str(k) + ", expected 0.." + str(c.max_regions));
    }
    if (letterbox->width < 1 || letterbox->height < 1 || !(letterbox->scale > 0.0) || !std::isfinite(letterbox->scale)) {
      fail(MVLM_INVALID_ARGUMENT, "letterbox is " + str(letterbox->height) + "x" + str(letterbox->width) + " at scale " +
                                      minivlm::str_double(letterbox->scale) + ", expected a positive size and scale");
    }
    if (k == 0) return;
    require(regions->boxes, "regions->boxes");
    require(regions->proposal_indices, "regions->proposal_indices");
    require(features, "features");
    require(tokens, "tokens");
    const size_t d = static_cast<size_t>(c.representation_size);
    const float scale = static_cast<float>(letterbox->scale);
    const float width = static_cast<float>(letterbox->width), height = static_cast<float>(letterbox->height);
    for (int32_t i = 0; i < k; ++i) {
      const int64_t row = regions->proposal_indices[i];
      if (row < 0 || static_cast<size_t>(row) >= num_proposals) {
        fail(MVLM_INVALID_ARGUMENT, "regions->proposal_indices[" + str(i) + "] is " + str(row) + ", outside [0, " +
                                        str(num_proposals) + ")");
      }
      // Letterbox.boxes_to_image: divide by the scale, clip to the image; then OSCAR's 6-d geometry.
      const float* b = regions->boxes + 4 * i;
      const float x1 = minivlm::clamp(b[0] / scale, 0.0f, width), y1 = minivlm::clamp(b[1] / scale, 0.0f, height);
      const float x2 = minivlm::clamp(b[2] / scale, 0.0f, width), y2 = minivlm::clamp(b[3] / scale, 0.0f, height);
      float* t = tokens + static_cast<size_t>(i) * (d + 6);
      std::memcpy(t, features + static_cast<size_t>(row) * d, d * sizeof(float));
      const float geometry[6] = {x1 / width, y1 / height, x2 / width, y2 / height, (x2 - x1) / width, (y2 - y1) / height};
      std::memcpy(t + d, geometry, sizeof(geometry));
      if (image_boxes) {
        const float v[4] = {x1, y1, x2, y2};
        std::memcpy(image_boxes + 4 * i, v, sizeof(v));
      }
    }
  });
}

}  // extern "C"
