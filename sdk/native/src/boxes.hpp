// Boxes: anchors, torchvision's BoxCoder, greedy NMS and the selection steps of python_ref/postprocess.py.
// All box arithmetic is float32 in torch's order of operations (compiled with -ffp-contract=off, so no fused
// multiply-adds); every sort is stable, ties broken by the lower index, as python_ref does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace minivlm {

struct Box {
  float x1, y1, x2, y2;
};

// Orders and clamping with torch's NaN semantics: sort descending puts NaN first, ascending last; clamp keeps NaN.
bool greater(float a, float b);
bool less(float a, float b);
float clamp(float v, float lo, float hi);
// Clamp a box into [0, size] x [0, size] (python_ref clip_boxes).
Box clip(Box b, float size);

// Indices sorting `scores` high to low, equal scores by lower index (NaN first, as torch.sort).
std::vector<int64_t> stable_descending(const float* scores, size_t n);

// torchvision BoxCoder.decode for one box.
Box decode_box(const float* delta, const float* reference, const float weights[4], float clip);

// Greedy NMS over boxes already in visiting order: positions kept (python_ref `_greedy_nms`).
std::vector<size_t> greedy_nms(const std::vector<Box>& boxes, float iou_threshold);

// python_ref `nms`: indices of kept boxes by descending score.
std::vector<int64_t> nms(const std::vector<Box>& boxes, const float* scores, float iou_threshold);

// python_ref `batched_nms`: NMS within each group, kept indices by descending score.
std::vector<int64_t> batched_nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                 const std::vector<int64_t>& groups, float iou_threshold);

}  // namespace minivlm
