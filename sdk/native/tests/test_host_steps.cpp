// Every host step against python_ref's goldens, chained the way an app runs them: preprocess; anchors and
// proposals from tee_stage1's outputs; region selection from tee_stage2's outputs on our proposals; region
// tokens and tags from our regions; the caption and question packing from our tokens and tags.
// Usage: test_host_steps GOLDEN_DIR MANIFEST_JSON VOCAB_TXT
#include <cstdio>
#include <cstring>

#include "check.hpp"
#include "golden.hpp"

namespace {

using check::kCoordRelTol;
using check::kFloatTol;

void compare_letterbox(check::Suite& s, const golden::Folder& g, const std::string& p, const mvlm_letterbox& box,
                       const std::string& label) {
  s.ok(box.height == g.integer(p + "/height") && box.width == g.integer(p + "/width") &&
           box.resized_height == g.integer(p + "/resized_height") && box.resized_width == g.integer(p + "/resized_width"),
       label + ": letterbox " + std::to_string(box.resized_height) + "x" + std::to_string(box.resized_width) +
           " of " + std::to_string(box.height) + "x" + std::to_string(box.width));
  s.ok(box.scale == g.number(p + "/scale"), label + ": letterbox scale (Python float, exact)");
}

// Packs bytes of an RGB image into another layout, with `pad` spare bytes per row.
std::vector<uint8_t> repack(const std::vector<uint8_t>& rgb, int h, int w, int format, size_t pad, size_t* row_bytes) {
  const size_t channels = (format == MVLM_PIXELS_RGBA8 || format == MVLM_PIXELS_BGRA8) ? 4 : 3;
  const bool bgr = format == MVLM_PIXELS_BGRA8 || format == MVLM_PIXELS_BGR8;
  *row_bytes = static_cast<size_t>(w) * channels + pad;
  std::vector<uint8_t> out(*row_bytes * static_cast<size_t>(h), 0xA5);  // padding and alpha hold junk
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const uint8_t* px = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      uint8_t* o = &out[static_cast<size_t>(y) * *row_bytes + static_cast<size_t>(x) * channels];
      o[0] = bgr ? px[2] : px[0];
      o[1] = px[1];
      o[2] = bgr ? px[0] : px[2];
    }
  }
  return out;
}

void preprocess_case(check::Suite& s, const golden::Folder& g, mvlm_config config, const std::string& image_ptr,
                     const std::string& pixels_ptr, const std::string& letterbox_ptr, const std::string& label) {
  const golden::Array image = g.array(image_ptr);
  const std::vector<uint8_t> rgb = image.u8();
  const int h = static_cast<int>(image.shape[0]), w = static_cast<int>(image.shape[1]);
  const std::vector<float> expected = g.array(pixels_ptr).floats();
  const size_t n = 3 * static_cast<size_t>(config.image_size) * static_cast<size_t>(config.image_size);
  s.ok(expected.size() == n, label + ": pixels are (1, 3, S, S)");
  std::vector<float> rgb_out(n);
  mvlm_letterbox box{};
  s.status(mvlm_preprocess(&config, rgb.data(), w, h, static_cast<size_t>(w) * 3, MVLM_PIXELS_RGB8, rgb_out.data(), n, &box),
           label + ": preprocess");
  s.close(rgb_out.data(), expected.data(), n, kFloatTol, label + ": pixels");
  compare_letterbox(s, g, letterbox_ptr, box, label);
  // The other layouts (with padded rows) give exactly the RGB result.
  const int formats[3] = {MVLM_PIXELS_RGBA8, MVLM_PIXELS_BGRA8, MVLM_PIXELS_BGR8};
  for (int format : formats) {
    size_t row_bytes = 0;
    const std::vector<uint8_t> packed = repack(rgb, h, w, format, 7, &row_bytes);
    std::vector<float> out(n);
    s.status(mvlm_preprocess(&config, packed.data(), w, h, row_bytes, format, out.data(), n, nullptr), label + ": other layout");
    s.ok(std::memcmp(out.data(), rgb_out.data(), n * sizeof(float)) == 0,
         label + ": pixel format " + std::to_string(format) + " gives the RGB result");
  }
}

std::vector<std::string> class_names(const mvlm_manifest* m) {
  int32_t n = 0;
  golden::must(mvlm_manifest_num_classes(m, &n), "num_classes");
  std::vector<std::string> out;
  for (int32_t i = 0; i < n; ++i) {
    char buf[256];
    size_t len = 0;
    golden::must(mvlm_manifest_class_name(m, i, buf, sizeof(buf), &len), "class_name");
    out.emplace_back(buf, len);
  }
  return out;
}

struct Packed {
  std::vector<int64_t> ids, types;
  std::vector<float> mask, regions, region_mask;
  mvlm_fusion_inputs view() {
    return {ids.data(), types.data(), mask.data(), regions.data(), region_mask.data()};
  }
  explicit Packed(const mvlm_config& c)
      : ids(static_cast<size_t>(c.max_text_tags_len)), types(ids.size()), mask(ids.size()),
        regions(static_cast<size_t>(c.max_regions * c.region_dim)), region_mask(static_cast<size_t>(c.max_regions)) {}
};

void compare_packed(check::Suite& s, const golden::Folder& g, const std::string& p, Packed& got, const std::string& label) {
  s.equal(got.ids, g.array(p + "/input_ids").ints(), label + ": input_ids");
  s.equal(got.types, g.array(p + "/token_type_ids").ints(), label + ": token_type_ids");
  s.equal(got.mask, g.array(p + "/token_mask").floats(), label + ": token_mask");
  const std::vector<float> regions = g.array(p + "/regions").floats();
  s.ok(regions.size() == got.regions.size(), label + ": regions size");
  s.close(got.regions.data(), regions.data(), std::min(regions.size(), got.regions.size()), kFloatTol, label + ": regions");
  s.equal(got.region_mask, g.array(p + "/region_mask").floats(), label + ": region_mask");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s GOLDEN_DIR MANIFEST_JSON VOCAB_TXT\n", argv[0]);
    return 2;
  }
  check::Suite suite("host steps");
  return suite.run([&](check::Suite& s) {
    const golden::Folder g(argv[1]);
    const golden::ManifestPtr manifest = golden::load_manifest(argv[2]);
    const golden::TokenizerPtr tok = golden::load_tokenizer(argv[3]);
    mvlm_config c{};
    golden::must(mvlm_manifest_config(manifest.get(), &c), "manifest config");
    s.status(mvlm_config_check(&c), "the manifest's config is consistent");
    int64_t specials[5];
    s.status(mvlm_tokenizer_special_ids(tok.get(), specials), "special ids");
    s.ok(specials[0] == c.pad_id && specials[1] == c.unk_id && specials[2] == c.cls_id && specials[3] == c.sep_id &&
             specials[4] == c.mask_id, "the vocab's specials are the manifest's");
    const std::vector<std::string> classes = class_names(manifest.get());
    s.ok(static_cast<int32_t>(classes.size()) == c.num_classes, "one class name per class");

    // Anchors.
    size_t num_anchors = 0;
    std::vector<int64_t> level_sizes(static_cast<size_t>(c.num_levels));
    s.status(mvlm_anchor_count(&c, &num_anchors, level_sizes.data()), "anchor_count");
    std::vector<float> anchors(num_anchors * 4);
    s.status(mvlm_make_anchors(&c, anchors.data(), num_anchors), "make_anchors");
    if (g.has("/anchors")) {
      const std::vector<float> expected = g.array("/anchors").floats();
      s.ok(expected.size() == anchors.size(), "anchor count " + std::to_string(num_anchors));
      s.close(anchors.data(), expected.data(), std::min(expected.size(), anchors.size()), kCoordRelTol, "anchors", true);
      s.equal(level_sizes, g.ints("/level_sizes"), "anchors per level");
    }

    // Preprocessing on small crops (tests/golden).
    if (g.has("/preprocess_cases")) {
      for (size_t i = 0, n = g.size("/preprocess_cases"); i < n; ++i) {
        const std::string p = "/preprocess_cases/" + std::to_string(i);
        mvlm_config small = c;
        small.image_size = static_cast<int32_t>(g.integer(p + "/size"));
        preprocess_case(s, g, small, p + "/image", p + "/pixels", p + "/letterbox", "preprocess " + g.string(p + "/source"));
      }
    }

    const size_t num_cases = g.size("/cases");
    s.ok(num_cases >= 4, "goldens hold at least 4 images");
    for (size_t ci = 0; ci < num_cases; ++ci) {
      const std::string name = g.key_at("/cases", ci);
      const std::string base = "/cases/" + golden::key(name);
      const std::string hs = base + "/host_steps";
      if (g.has(hs + "/preprocess")) {  // a build's goldens: the full-size image
        preprocess_case(s, g, c, hs + "/preprocess/inputs/image",
                        hs + "/preprocess/outputs/pixels", hs + "/preprocess/outputs/letterbox/value", name + " preprocess");
      }
      if (g.has(hs + "/proposals/inputs/anchors")) {
        const std::vector<float> expected = g.array(hs + "/proposals/inputs/anchors").floats();
        s.ok(expected.size() == anchors.size(), name + ": anchor count");
        s.close(anchors.data(), expected.data(), std::min(expected.size(), anchors.size()), kCoordRelTol, name + ": anchors", true);
      }

      // Proposals from tee_stage1's objectness and deltas.
      const std::vector<float> objectness = g.array(hs + "/proposals/inputs/objectness").floats();
      const std::vector<float> deltas = g.array(hs + "/proposals/inputs/deltas").floats();
      s.ok(objectness.size() == num_anchors && deltas.size() == 4 * num_anchors, name + ": stage-1 outputs match the anchors");
      const size_t k = static_cast<size_t>(c.post_nms_top_n);
      std::vector<float> proposals(4 * k);
      std::vector<uint8_t> valid(k);
      s.status(mvlm_select_proposals(&c, objectness.data(), deltas.data(), anchors.data(), num_anchors, proposals.data(),
                                     valid.data()), name + ": select_proposals");
      const std::vector<float> want_proposals = g.array(hs + "/proposals/outputs/proposals").floats();
      s.close(proposals.data(), want_proposals.data(), std::min(proposals.size(), want_proposals.size()), kCoordRelTol,
              name + ": proposals", true);
      s.equal(valid, g.array(hs + "/proposals/outputs/valid").bools(), name + ": valid proposals");

      // Region selection from tee_stage2's outputs on these proposals.
      const std::string rs = hs + "/region_selection";
      const std::vector<float> class_logits = g.array(rs + "/inputs/class_logits").floats();
      const std::vector<float> box_deltas = g.array(rs + "/inputs/box_deltas").floats();
      const std::vector<float> features = g.array(rs + "/inputs/features").floats();
      const size_t m = static_cast<size_t>(c.max_regions);
      std::vector<float> boxes(4 * m), scores(m);
      std::vector<int64_t> labels(m), rows(m);
      mvlm_regions regions{0, boxes.data(), labels.data(), scores.data(), rows.data()};
      s.status(mvlm_select_regions(&c, proposals.data(), valid.data(), k, class_logits.data(), box_deltas.data(), &regions),
               name + ": select_regions");
      const size_t count = static_cast<size_t>(regions.count);
      const std::vector<int64_t> want_labels = g.array(rs + "/outputs/labels").ints();
      s.ok(count == want_labels.size(), name + ": " + std::to_string(count) + " regions, python_ref " + std::to_string(want_labels.size()));
      boxes.resize(4 * count), scores.resize(count), labels.resize(count), rows.resize(count);
      const std::vector<float> want_boxes = g.array(rs + "/outputs/boxes").floats();
      const std::vector<float> want_scores = g.array(rs + "/outputs/scores").floats();
      s.close(boxes.data(), want_boxes.data(), std::min(boxes.size(), want_boxes.size()), kCoordRelTol, name + ": region boxes", true);
      s.close(scores.data(), want_scores.data(), std::min(scores.size(), want_scores.size()), kFloatTol, name + ": region scores");
      s.equal(labels, want_labels, name + ": region labels");
      s.equal(rows, g.array(rs + "/outputs/proposal_indices").ints(), name + ": region proposal indices");
      boxes.resize(4 * m), labels.resize(m), scores.resize(m), rows.resize(m);
      regions = {static_cast<int32_t>(count), boxes.data(), labels.data(), scores.data(), rows.data()};

      // Region tokens and tags.
      // Index version 2 keeps the letterbox per image; version 1 only in the preprocess step's outputs.
      const std::string lb = g.has(base + "/letterbox") ? base + "/letterbox" : hs + "/preprocess/outputs/letterbox/value";
      mvlm_letterbox box{static_cast<int32_t>(g.integer(lb + "/height")), static_cast<int32_t>(g.integer(lb + "/width")),
                         g.number(lb + "/scale"), static_cast<int32_t>(g.integer(lb + "/resized_height")),
                         static_cast<int32_t>(g.integer(lb + "/resized_width"))};
      const size_t rd = static_cast<size_t>(c.region_dim);
      std::vector<float> tokens(count * rd), image_boxes(count * 4);
      s.status(mvlm_region_tokens(&c, &regions, features.data(), k, &box, tokens.data(), image_boxes.data()),
               name + ": region_tokens");
      const std::vector<float> want_tokens = g.array(hs + "/detections/outputs/region_tokens").floats();
      s.ok(want_tokens.size() == tokens.size(), name + ": region token count");
      s.close(tokens.data(), want_tokens.data(), std::min(tokens.size(), want_tokens.size()), kFloatTol, name + ": region tokens");
      const std::vector<float> want_image_boxes = g.array(hs + "/detections/outputs/boxes").floats();
      s.close(image_boxes.data(), want_image_boxes.data(), std::min(image_boxes.size(), want_image_boxes.size()), kCoordRelTol,
              name + ": boxes in image pixels", true);
      std::vector<std::string> tags;
      for (size_t i = 0; i < count; ++i) {
        tags.push_back(labels[i] >= 0 && labels[i] < static_cast<int64_t>(classes.size()) ? classes[static_cast<size_t>(labels[i])] : "?");
      }
      const std::vector<std::string> want_tags = g.strings(hs + "/detections/outputs/tags/value");
      s.ok(tags == want_tags, name + ": tags");
      std::vector<const char*> tag_ptrs;
      for (const std::string& t : tags) tag_ptrs.push_back(t.c_str());

      // Fusion inputs: the caption's (no text) and the question's.
      Packed caption(c);
      mvlm_fusion_inputs view = caption.view();
      s.status(mvlm_pack_inputs(tok.get(), &c, nullptr, 0, tag_ptrs.data(), tag_ptrs.size(), tokens.data(), count, 0, &view),
               name + ": pack caption inputs");
      compare_packed(s, g, hs + "/caption_packing/outputs", caption, name + " caption packing");
      s.ok(g.strings(hs + "/caption_packing/inputs/tags/value") == tags, name + ": caption packing tags");
      const std::string question = g.string(hs + "/question_packing/inputs/question/value");
      Packed asked(c);
      view = asked.view();
      s.status(mvlm_pack_inputs(tok.get(), &c, question.data(), question.size(), tag_ptrs.data(), tag_ptrs.size(),
                                tokens.data(), count, 1, &view), name + ": pack question inputs");
      compare_packed(s, g, hs + "/question_packing/outputs", asked, name + " question packing");
    }
  });
}
