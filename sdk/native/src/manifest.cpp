// manifest.json of a build (docs/ARCHITECTURE.md §6, converters/build.py and converters/manifest.py): the model config the host steps need, the
// tokenizer specials, and the build's file names. Every missing or mistyped field is an MVLM_BAD_FILE error
// naming its JSON pointer.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "common.hpp"
#include "handles.hpp"
#include "json_fields.hpp"

using minivlm::fail;
using minivlm::require;
using minivlm::str;
using minivlm::json::Value;

namespace {

constexpr double kSchemaVersion = 1;

using minivlm::json::Fields;

mvlm_config read_config(const Fields& r, const std::string& what) {
  const double version = r.number("/schema_version");
  if (version != kSchemaVersion) {
    fail(MVLM_BAD_FILE, what + " has schema_version " + minivlm::str_double(version) + ", this core reads " +
                            minivlm::str_double(kSchemaVersion));
  }
  // The model family (converters/build.py; absent before EfficientVLM: a MiniVLM build). These are MiniVLM's host
  // steps, so any other family is refused here, before its missing TEE config is; an EfficientVLM build's config
  // is read by mvlm_evlm_config_load.
  if (const Value* family = r.optional("family"); family && family->type != Value::Type::String) {
    fail(MVLM_BAD_FILE, what + " /family is " + minivlm::json::type_name(family->type) + ", expected " +
                            minivlm::json::type_name(Value::Type::String));
  } else if (family && family->string != "minivlm") {
    const std::string& name = family->string;  // echoed only if short and printable: errors stay one line
    const bool plain = name.size() <= 40 && std::all_of(name.begin(), name.end(), [](unsigned char ch) { return ch >= 0x20 && ch < 0x7f; });
    fail(MVLM_BAD_FILE, what + " is a build of the " + (plain ? name : std::string("another")) + " model family; " +
                            (name == "efficientvlm" ? "read its config with mvlm_evlm_config_load"
                                                    : "this core runs MiniVLM and EfficientVLM builds"));
  }
  mvlm_config c{};
  const std::string tee = "/model/config/tee", fusion = "/model/config/fusion";
  c.image_size = r.integer(tee + "/image_size");
  r.numbers(tee + "/pixel_mean", c.pixel_mean, 3, 3);
  r.numbers(tee + "/pixel_std", c.pixel_std, 3, 3);
  c.min_level = r.integer(tee + "/bifpn/min_level");
  const int32_t max_level = r.integer(tee + "/bifpn/max_level");
  c.num_levels = r.numbers(tee + "/rpn/anchor_sizes", c.anchor_sizes, MVLM_MAX_LEVELS);
  if (c.num_levels != max_level - c.min_level + 1) {
    fail(MVLM_BAD_FILE, what + " " + tee + "/rpn/anchor_sizes has " + str(c.num_levels) + " entries for levels P" +
                            str(c.min_level) + "..P" + str(max_level));
  }
  c.num_ratios = r.numbers(tee + "/rpn/aspect_ratios", c.aspect_ratios, MVLM_MAX_RATIOS);
  r.numbers(tee + "/rpn/box_coder_weights", c.rpn_box_coder_weights, 4, 4);
  c.pre_nms_top_n = r.integer(tee + "/rpn/pre_nms_top_n");
  c.rpn_nms_threshold = r.number(tee + "/rpn/nms_threshold");
  c.post_nms_top_n = r.integer(tee + "/rpn/post_nms_top_n");
  c.min_box_size = r.number(tee + "/rpn/min_box_size");
  const std::string roi = tee + "/roi_head";
  c.num_classes = r.integer(roi + "/num_classes");
  c.num_attributes = r.integer(roi + "/num_attributes");
  c.representation_size = r.integer(roi + "/representation_size");
  r.numbers(roi + "/box_coder_weights", c.roi_box_coder_weights, 4, 4);
  c.score_threshold = r.number(roi + "/score_threshold");
  c.roi_nms_threshold = r.number(roi + "/nms_threshold");
  c.max_regions = r.integer(roi + "/max_regions");
  const std::string& order = r.string(roi + "/region_order");
  if (order == "score") {
    c.region_order = MVLM_REGION_ORDER_SCORE;
  } else if (order == "left_to_right") {
    c.region_order = MVLM_REGION_ORDER_LEFT_TO_RIGHT;
  } else {
    fail(MVLM_BAD_FILE, what + " " + roi + "/region_order is '" + order + "', expected 'score' or 'left_to_right'");
  }
  c.vocab_size = r.integer(fusion + "/vocab_size");
  c.hidden_size = r.integer(fusion + "/hidden_size");
  c.num_layers = r.integer(fusion + "/num_layers");
  c.num_heads = r.integer(fusion + "/num_heads");
  if (c.num_heads <= 0 || c.hidden_size % c.num_heads) {
    fail(MVLM_BAD_FILE, what + " " + fusion + ": hidden_size " + str(c.hidden_size) + " is not divisible by num_heads " +
                            str(c.num_heads));
  }
  c.head_dim = c.hidden_size / c.num_heads;
  // A pruned encoder lists the heads each layer keeps (absent or empty: num_heads in every layer). head_dim stays;
  // the caption K/V tensors carry the most heads any layer keeps (at least 1), python_ref's cache_heads.
  if (const Value* per_layer = r.find(fusion + "/heads_per_layer"); per_layer && !(per_layer->type == Value::Type::Array &&
                                                                                   per_layer->items.empty())) {
    const std::string pointer = fusion + "/heads_per_layer";
    const Value& list = r.at(pointer, Value::Type::Array);
    if (list.items.size() != static_cast<size_t>(std::max(c.num_layers, 0))) {
      fail(MVLM_BAD_FILE, what + " " + pointer + " has " + str(list.items.size()) + " entries, expected num_layers " +
                              str(c.num_layers));
    }
    int32_t most = 1;
    for (size_t i = 0; i < list.items.size(); ++i) {
      const int32_t heads = r.integer(pointer + "/" + str(i));
      if (heads < 0 || heads > c.num_heads) {
        fail(MVLM_BAD_FILE, what + " " + pointer + "/" + str(i) + " is " + str(heads) + ", expected 0.." + str(c.num_heads));
      }
      most = std::max(most, heads);
    }
    c.num_heads = most;
  }
  c.max_text_len = r.integer(fusion + "/max_text_len");
  c.max_text_tags_len = r.integer(fusion + "/max_text_tags_len");
  c.max_tags_len = c.max_text_tags_len - c.max_text_len;
  c.region_dim = r.integer(fusion + "/region_dim");
  c.max_caption_tokens = r.integer(fusion + "/max_caption_tokens");
  const int32_t fusion_regions = r.integer(fusion + "/max_regions");
  if (fusion_regions != c.max_regions) {
    fail(MVLM_BAD_FILE, what + " " + fusion + "/max_regions is " + str(fusion_regions) + ", the TEE keeps " +
                            str(c.max_regions));
  }
  const char* const names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  int64_t* ids[5] = {&c.pad_id, &c.unk_id, &c.cls_id, &c.sep_id, &c.mask_id};
  for (int k = 0; k < 5; ++k) *ids[k] = r.integer(std::string("/tokenizer/specials/") + names[k]);
  // The same checks every function applies, reported as a bad file.
  if (minivlm::guard([&] { minivlm::checked(&c); }) != MVLM_OK) {
    fail(MVLM_BAD_FILE, what + " describes an inconsistent model: " + mvlm_last_error());
  }
  return c;
}

std::string file_name(const Fields& r, const std::string& pointer, const std::string& what) {
  const std::string& name = r.string(pointer);
  const std::filesystem::path p(name);
  bool outside = name.empty() || p.is_absolute() || p.has_root_name();
  for (const auto& part : p) outside = outside || part == "..";
  if (outside) fail(MVLM_BAD_FILE, what + " " + pointer + " is '" + name + "', expected a file inside the build folder");
  return name;
}

std::string join(const std::string& folder, const std::string& name) {
  return folder.empty() ? name : (std::filesystem::path(folder) / name).string();
}

mvlm_manifest* make(const std::string& text, const std::string& folder, const std::string& what) {
  auto m = std::make_unique<mvlm_manifest>();
  m->json.root = minivlm::json::parse(text, what);
  m->folder = folder;
  m->config = read_config(Fields(m->json.root, what), what);
  return m.release();
}

}  // namespace

extern "C" {

mvlm_status mvlm_manifest_load(const char* path, mvlm_manifest** out) {
  return minivlm::guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    std::filesystem::path file(path);
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec)) file /= "manifest.json";
    const std::string text = minivlm::read_file(file.string(), "manifest");
    *out = make(text, file.parent_path().string(), file.string());
  });
}

mvlm_status mvlm_manifest_parse(const char* text, size_t length, const char* folder, mvlm_manifest** out) {
  return minivlm::guard([&] {
    require(out, "out");
    *out = nullptr;
    if (length > 0) require(text, "text");
    *out = make(std::string(length ? text : "", length), folder ? folder : "", "manifest.json");
  });
}

void mvlm_manifest_free(mvlm_manifest* manifest) { delete manifest; }

mvlm_status mvlm_manifest_config(const mvlm_manifest* manifest, mvlm_config* config) {
  return minivlm::guard([&] {
    require(manifest, "manifest");
    require(config, "config");
    if (!manifest->has_config) fail(MVLM_BAD_FILE, "the manifest is of a " + manifest->family + " build, which has no MiniVLM host-step config");
    *config = manifest->config;
  });
}

const mvlm_json* mvlm_manifest_json(const mvlm_manifest* manifest) { return manifest ? &manifest->json : nullptr; }

mvlm_status mvlm_manifest_file(const mvlm_manifest* manifest, const char* which, char* buffer, size_t capacity,
                               size_t* length) {
  return minivlm::guard([&] {
    require(length, "length");
    *length = 0;
    require(manifest, "manifest");
    require(which, "which");
    const Fields r(manifest->json.root, "manifest.json");
    const std::string w = which;
    std::string pointer;
    if (w == "vocab") {
      pointer = "/tokenizer/vocab_file";
    } else if (w == "vocabularies") {
      pointer = "/vocabularies_file";
    } else {
      const Value* graphs = manifest->json.root.get("graphs");
      if (!graphs || !graphs->get(w)) fail(MVLM_INVALID_ARGUMENT, "the manifest has no graph '" + w + "'");
      pointer = "/graphs/" + w + "/file";
    }
    minivlm::copy_out(join(manifest->folder, file_name(r, pointer, "manifest.json")), buffer, capacity, length);
  });
}

static void load_classes(const mvlm_manifest* m) {
  if (!m->has_config) fail(MVLM_BAD_FILE, "the manifest is of a " + m->family + " build, which has no MiniVLM detector classes");
  std::call_once(m->classes_once, [m] {
    m->classes_status = minivlm::guard([m] {
      const Fields r(m->json.root, "manifest.json");
      const std::string path = join(m->folder, file_name(r, "/vocabularies_file", "manifest.json"));
      const Value root = minivlm::json::parse(minivlm::read_file(path, "vocabularies file"), path);
      const Fields v(root, path);
      const Value& classes = v.at("/classes", Value::Type::Array);
      if (classes.items.size() != static_cast<size_t>(m->config.num_classes)) {
        fail(MVLM_BAD_FILE, path + " has " + str(classes.items.size()) + " classes, the model predicts " +
                                str(m->config.num_classes));
      }
      std::vector<std::string> names;
      for (size_t i = 0; i < classes.items.size(); ++i) names.push_back(v.string("/classes/" + str(i)));
      m->classes = std::move(names);
    });
    if (m->classes_status != MVLM_OK) m->classes_error = mvlm_last_error();
  });
  if (m->classes_status != MVLM_OK) fail(m->classes_status, m->classes_error);
}

mvlm_status mvlm_manifest_num_classes(const mvlm_manifest* manifest, int32_t* count) {
  return minivlm::guard([&] {
    require(manifest, "manifest");
    require(count, "count");
    load_classes(manifest);
    *count = static_cast<int32_t>(manifest->classes.size());
  });
}

mvlm_status mvlm_manifest_class_name(const mvlm_manifest* manifest, int32_t index, char* buffer, size_t capacity,
                                     size_t* length) {
  return minivlm::guard([&] {
    require(length, "length");
    *length = 0;
    require(manifest, "manifest");
    load_classes(manifest);
    if (index < 0 || static_cast<size_t>(index) >= manifest->classes.size()) {
      fail(MVLM_INVALID_ARGUMENT, "class index " + str(index) + " is outside [0, " + str(manifest->classes.size()) + ")");
    }
    minivlm::copy_out(manifest->classes[static_cast<size_t>(index)], buffer, capacity, length);
  });
}

}  // extern "C"
