// Build checks (minivlm.h, "Build checks"): verification of a build folder against its manifest, the runtime
// plan a platform can honour, the compiled-graph cache path and the photo decode size. The Python SDK's
// sdk/build_checks.py verifies the same manifest entries and files; the rules of the plan and the decode size
// are documented in the header.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "common.hpp"
#include "handles.hpp"
#include "manifest_digest.hpp"
#include "sha256.hpp"

using minivlm::fail;
using minivlm::require;
using minivlm::str;
using minivlm::json::Value;
namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kDigestKey = "manifest_sha256";
constexpr int32_t kDefaultMaxThreads = 4;  // beyond 4 threads the demo's graphs gain little and phones get hot

// A value for a one-line message: short, printable, or described.
std::string shown(const std::string& value) {
  const bool plain = value.size() <= 60 &&
                     std::all_of(value.begin(), value.end(), [](unsigned char c) { return c >= 0x20 && c < 0x7f; });
  return plain ? "'" + value + "'" : "a " + str(value.size()) + "-byte value";
}

bool is_sha256(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

const Value* member(const Value& root, const char* key) { return root.type == Value::Type::Object ? root.get(key) : nullptr; }

// A top-level string entry; `optional` entries may be absent or null (returns "").
std::string entry(const Value& root, const char* key, bool optional = false) {
  const Value* v = member(root, key);
  if ((!v || v->type == Value::Type::Null) && optional) return "";
  if (!v) fail(MVLM_BAD_FILE, std::string(kManifest) + " lacks /" + key);
  if (v->type != Value::Type::String) {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /" + key + " is " + minivlm::json::type_name(v->type) + ", expected a string");
  }
  return v->string;
}

std::string family_of(const Value& root) {
  const std::string family = entry(root, "family", true);
  if (family.empty()) return "minivlm";  // manifests before EfficientVLM name none
  if (family != "minivlm" && family != "efficientvlm") {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /family is " + shown(family) + ", expected 'minivlm' or 'efficientvlm'");
  }
  return family;
}

void check_schema(const Value& root) {
  if (root.type != Value::Type::Object) fail(MVLM_BAD_FILE, std::string(kManifest) + " is not a JSON object");
  const Value* v = root.get("schema_version");
  if (!v || v->type != Value::Type::Number || v->number != 1) {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /schema_version is not 1 (this core reads schema version 1)");
  }
}

// The build target and the runtime that runs it.
struct Target {
  const char* target;
  const char* runtime;
  const char* tool;  // manifest "tools" key of the exporter
};
constexpr Target kTargets[] = {{"executorch", "executorch", "executorch"},
                               {"tflite", "litert", "ai-edge-litert"},
                               {"coreml", "coreml", "coremltools"},
                               {"coreai", "coreai", "coreai-core"}};

const Target& target_of(const Value& root) {
  const std::string t = entry(root, "target");
  for (const Target& k : kTargets) {
    if (t == k.target) return k;
  }
  fail(MVLM_BAD_FILE, std::string(kManifest) + " /target is " + shown(t) + ", expected executorch, tflite, coreml or coreai");
}

fs::path manifest_path(const char* path) {
  fs::path file(path);
  std::error_code ec;
  if (fs::is_directory(file, ec)) file /= kManifest;
  return file;
}

// `folder / rel`, refused unless rel is a relative path inside the folder that passes through no symbolic link.
fs::path inside(const fs::path& folder, const std::string& rel) {
  const fs::path p(rel);
  bool outside = rel.empty() || p.is_absolute() || p.has_root_name() || rel.find('\\') != std::string::npos;
  for (const auto& part : p) outside = outside || part == "..";
  if (outside) fail(MVLM_BAD_FILE, std::string(kManifest) + " lists " + shown(rel) + ", which is not a path inside the build folder");
  fs::path at = folder;
  for (const auto& part : p) {
    at /= part;
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(at, ec))) {
      fail(MVLM_BAD_FILE, folder.string() + ": " + rel + " goes through a symbolic link; a build folder holds only the files minivlm-convert wrote");
    }
  }
  return folder / p;
}

// "1.5.1", "1.0.0b3", "2.3.0.dev20250101+cpu" -> (1, 5), ...; false unless it starts with major.minor.
bool major_minor(const std::string& v, long* major, long* minor) {
  size_t i = 0;
  auto number = [&](long* out) {
    const size_t start = i;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9' && i - start < 9) ++i;
    if (i == start) return false;
    *out = std::stol(v.substr(start, i - start));
    return true;
  };
  if (!number(major)) return false;
  if (i >= v.size() || v[i] != '.') return false;
  ++i;
  return number(minor);
}

void check_files(const fs::path& folder, const Value& root) {
  const Value* files = member(root, "files");
  if (!files || files->type != Value::Type::Object || files->members.empty()) {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /files is not an object mapping each file of the build to its sha256");
  }
  // The golden folder is test data (the parity goldens): an app may ship the build without it. When it is
  // there, every file of it is checked like the rest.
  std::string golden = entry(root, "golden_dir", true);
  if (golden.empty()) golden = "golden";
  std::error_code golden_ec;
  const bool golden_shipped = fs::exists(inside(folder, golden), golden_ec);
  for (const auto& m : files->members) {
    const std::string& rel = m.key;
    if (m.value.type != Value::Type::String || !is_sha256(m.value.string)) {
      fail(MVLM_BAD_FILE, std::string(kManifest) + " /files entry " + shown(rel) + " is not a sha256 hex digest");
    }
    const fs::path path = inside(folder, rel);
    if (!golden_shipped && rel.compare(0, golden.size() + 1, golden + "/") == 0) continue;
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (!fs::exists(status)) fail(MVLM_BAD_FILE, folder.string() + ": " + rel + " is missing (listed in manifest.json)");
    if (!fs::is_regular_file(status)) fail(MVLM_BAD_FILE, folder.string() + ": " + rel + " is not a regular file; rebuild it");
    const std::string actual = minivlm::sha256_file(path.string());
    if (actual != m.value.string) {
      fail(MVLM_BAD_FILE, folder.string() + ": " + rel + " fails its sha256 check (expected " + m.value.string.substr(0, 12) +
                              "..., got " + actual.substr(0, 12) + "...): tampered with or corrupt; copy or rebuild it");
    }
  }
  // What the SDK reads must be among them: every graph file (or, for a Core ML package / Core AI asset folder,
  // its files), the vocabularies and the weights.
  auto listed = [&](const std::string& rel, bool folder_ok) {
    inside(folder, rel);
    if (files->get(rel)) return;
    const std::string prefix = rel + (rel.back() == '/' ? "" : "/");
    if (folder_ok && std::any_of(files->members.begin(), files->members.end(),
                                 [&](const minivlm::json::Member& m) { return m.key.compare(0, prefix.size(), prefix) == 0; })) {
      return;
    }
    fail(MVLM_BAD_FILE, folder.string() + ": " + rel + " has no checksum in manifest.json");
  };
  if (const Value* graphs = member(root, "graphs"); graphs && graphs->type == Value::Type::Object) {
    for (const auto& g : graphs->members) {
      const Value* file = g.value.get("file");
      if (!file || file->type != Value::Type::String || file->string.empty()) {
        fail(MVLM_BAD_FILE, std::string(kManifest) + " /graphs/" + g.key + "/file is not a file name");
      }
      listed(file->string, true);
    }
  } else {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /graphs is not an object");
  }
  if (const Value* tok = member(root, "tokenizer"); tok && tok->get("vocab_file") && tok->get("vocab_file")->type == Value::Type::String) {
    listed(tok->get("vocab_file")->string, false);
  }
  for (const char* key : {"vocabularies_file", "weights_file"}) {
    const std::string rel = entry(root, key, true);
    if (!rel.empty()) listed(rel, false);
  }
}

void check_runtime(const Value& root, const std::string& runtime, const char* runtime_version) {
  bool known = false;
  for (const Target& k : kTargets) known = known || runtime == k.runtime;
  if (!known) fail(MVLM_INVALID_ARGUMENT, "runtime is " + shown(runtime) + ", expected executorch, litert, coreml or coreai");
  const Target& t = target_of(root);
  if (runtime != t.runtime) {
    fail(MVLM_INVALID_ARGUMENT, "the build targets " + std::string(t.target) + " (runtime " + t.runtime + "), not " + runtime +
                                    "; convert it with minivlm-convert --target " +
                                    (runtime == "litert" ? "tflite" : runtime));
  }
  if (runtime_version == nullptr) return;
  const std::string have = runtime_version;
  long rmaj = 0, rmin = 0, bmaj = 0, bmin = 0;
  if (!major_minor(have, &rmaj, &rmin)) {
    fail(MVLM_INVALID_ARGUMENT, "runtime_version is " + shown(have) + ", expected major.minor[.patch]");
  }
  const Value* tools = member(root, "tools");
  const Value* built = tools && tools->type == Value::Type::Object ? tools->get(t.tool) : nullptr;
  if (!built || built->type != Value::Type::String) {
    fail(MVLM_INVALID_ARGUMENT, std::string("the build records no ") + t.tool + " version (manifest.json /tools/" + t.tool +
                                    "), so runtime " + have + " cannot be checked; pass no version to skip the check");
  }
  if (!major_minor(built->string, &bmaj, &bmin)) {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /tools/" + t.tool + " is " + shown(built->string) + ", expected major.minor[.patch]");
  }
  if (rmaj != bmaj || rmin < bmin) {
    fail(MVLM_INVALID_ARGUMENT, std::string(t.runtime) + " " + have + " cannot run this build, exported with " + t.tool + " " +
                                    built->string + ": use " + t.runtime + " " + str(bmaj) + "." + str(bmin) + " or a later " +
                                    str(bmaj) + ".x");
  }
}

// --- runtime plan ------------------------------------------------------------------------------------------

void put(char* field, size_t capacity, const std::string& value) {
  const size_t n = std::min(value.size(), capacity - 1);
  std::memcpy(field, value.data(), n);
  field[n] = '\0';
}

struct Plan {
  std::string backend, accelerator, compute_units;
  int32_t threads = 0;
  std::vector<std::string> notes;
};

std::string choice(const char* value, const char* what, std::initializer_list<const char*> allowed) {
  const std::string v = value ? value : "auto";
  for (const char* a : allowed) {
    if (v == a) return v;
  }
  std::string list;
  for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
  fail(MVLM_INVALID_ARGUMENT, std::string(what) + " is " + shown(v) + ", expected one of " + list);
}

int32_t plan_threads(const mvlm_runtime_request& r, std::vector<std::string>& notes) {
  if (r.threads == 0) return std::max(1, std::min(r.available_cores, kDefaultMaxThreads));
  if (r.threads > r.available_cores) {
    notes.push_back(str(r.threads) + " threads requested, the device has " + str(r.available_cores) + " cores: using " +
                    str(r.available_cores));
    return r.available_cores;
  }
  return r.threads;
}

Plan plan_android(const Value& root, const mvlm_runtime_request& r) {
  const std::string target = target_of(root).target, delegate = entry(root, "delegate", true);
  const std::string accel = choice(r.accelerator, "accelerator", {"auto", "cpu", "gpu", "npu"});
  choice(r.compute_units, "compute_units on Android (a Core ML choice)", {"auto"});
  Plan p;
  if (target == "executorch") {
    if (delegate == "coreml") {
      fail(MVLM_INVALID_ARGUMENT, "this ExecuTorch build is delegated to Core ML, which Android lacks; convert with "
                                  "--target executorch --delegate xnnpack");
    }
    if (accel == "gpu" || accel == "npu") {
      fail(MVLM_INVALID_ARGUMENT, "this ExecuTorch build is delegated to " + (delegate.empty() ? std::string("xnnpack") : delegate) +
                                      ", which runs on the CPU only; for the " + (accel == "gpu" ? "GPU" : "NPU") +
                                      " convert with --target tflite --delegate " + (accel == "gpu" ? "gpu" : "nnapi") +
                                      " and run it with LiteRT");
    }
    p.backend = "executorch";
    p.accelerator = "cpu";
  } else if (target == "tflite") {
    p.backend = "litert";
    if (accel != "auto") {
      p.accelerator = accel;
    } else if (delegate == "gpu") {
      p.accelerator = "gpu";
    } else if (delegate == "nnapi") {
      p.accelerator = "npu";
    } else {
      p.accelerator = "cpu";
    }
    if (delegate == "nnapi" && p.accelerator == "npu") {
      p.notes.push_back("the build was converted for NNAPI, deprecated since Android 15: LiteRT's NPU accelerator runs it");
    }
  } else {
    fail(MVLM_INVALID_ARGUMENT, "a " + target + " build runs on iOS and macOS only; on Android use an executorch or tflite build");
  }
  p.threads = plan_threads(r, p.notes);
  return p;
}

Plan plan_ios(const Value& root, const mvlm_runtime_request& r) {
  const std::string target = target_of(root).target, delegate = entry(root, "delegate", true);
  const std::string units = choice(r.compute_units, "compute_units", {"auto", "all", "cpu_only", "cpu_and_gpu", "cpu_and_ne"});
  choice(r.accelerator, "accelerator on iOS (an Android choice; iOS takes compute_units)", {"auto"});
  const std::string built_units = entry(root, "compute_units", true);
  Plan p;
  auto no_threads = [&] {
    if (r.threads != 0) p.notes.push_back(p.backend == "coreml" ? "Core ML schedules its own threads" : "Core AI schedules its own threads");
    p.threads = 0;
  };
  if (target == "coreml") {
    p.backend = "coreml";
    p.compute_units = units != "auto" ? units : (built_units.empty() ? "all" : built_units);
    if (p.compute_units != "all" && p.compute_units != "cpu_only" && p.compute_units != "cpu_and_gpu" && p.compute_units != "cpu_and_ne") {
      fail(MVLM_BAD_FILE, std::string(kManifest) + " /compute_units is " + shown(p.compute_units) + ", not a Core ML choice");
    }
    no_threads();
  } else if (target == "coreai") {
    p.backend = "coreai";
    if (units == "auto") {
      p.compute_units = built_units.empty() ? "default" : built_units;
      if (p.compute_units != "default" && p.compute_units != "neural_engine" && p.compute_units != "gpu" && p.compute_units != "cpu_only") {
        fail(MVLM_BAD_FILE, std::string(kManifest) + " /compute_units is " + shown(p.compute_units) + ", not a Core AI choice");
      }
    } else {
      p.compute_units = units == "all" ? "default" : units == "cpu_and_gpu" ? "gpu" : units == "cpu_and_ne" ? "neural_engine" : "cpu_only";
    }
    no_threads();
  } else if (target == "executorch") {
    p.backend = "executorch";
    if (delegate == "coreml") {
      if (units != "auto") p.notes.push_back("the Core ML delegate's compute units were fixed at export; " + units + " is not applied");
      p.threads = plan_threads(r, p.notes);
    } else {
      if (units != "auto" && units != "cpu_only") {
        fail(MVLM_INVALID_ARGUMENT, "this ExecuTorch build is delegated to " + (delegate.empty() ? std::string("xnnpack") : delegate) +
                                        ", which runs on the CPU only; for " + units +
                                        " convert with --target coreml (or --target executorch --delegate coreml)");
      }
      p.accelerator = "cpu";
      p.threads = plan_threads(r, p.notes);
    }
  } else {
    fail(MVLM_INVALID_ARGUMENT, "a " + target + " build runs on Android (LiteRT); on iOS use a coreml, coreai or executorch build");
  }
  return p;
}

// --- decode size --------------------------------------------------------------------------------------------

int32_t preprocessing_size(const mvlm_manifest& m) {
  if (m.has_config) return m.config.image_size;
  const Value* pre = member(m.json.root, "preprocessing");
  const Value* size = pre && pre->type == Value::Type::Object ? pre->get("size") : nullptr;
  if (!size || size->type != Value::Type::Number || size->number != std::floor(size->number) || size->number < 1 ||
      size->number > 8192) {
    fail(MVLM_BAD_FILE, std::string(kManifest) + " /preprocessing/size is not an image size (an integer in 1..8192)");
  }
  return static_cast<int32_t>(size->number);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

extern "C" {

mvlm_status mvlm_build_manifest_load(const char* path, mvlm_manifest** out) {
  return minivlm::guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    const fs::path file = manifest_path(path);
    const std::string text = minivlm::read_file(file.string(), "manifest");
    auto m = std::make_unique<mvlm_manifest>();
    m->json.root = minivlm::json::parse(text, file.string());
    check_schema(m->json.root);
    m->family = family_of(m->json.root);
    if (m->family == "minivlm") {
      mvlm_manifest* full = nullptr;
      const mvlm_status s = mvlm_manifest_parse(text.data(), text.size(), file.parent_path().string().c_str(), &full);
      if (s != MVLM_OK) fail(s, mvlm_last_error());
      *out = full;
      return;
    }
    m->folder = file.parent_path().string();
    m->has_config = false;
    *out = m.release();
  });
}

mvlm_status mvlm_build_verify(const char* folder, const char* runtime, const char* runtime_version) {
  return minivlm::guard([&] {
    require(folder, "folder");
    require(runtime, "runtime");
    const fs::path file = manifest_path(folder);
    const fs::path dir = file.parent_path();
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(file, ec))) {
      fail(MVLM_BAD_FILE, file.string() + " is a symbolic link; a build folder holds only the files minivlm-convert wrote");
    }
    const Value root = minivlm::json::parse(minivlm::read_file(file.string(), "manifest"), file.string());
    check_schema(root);
    family_of(root);
    const std::string recorded = entry(root, kDigestKey);
    if (!is_sha256(recorded)) fail(MVLM_BAD_FILE, file.string() + " /" + kDigestKey + " is not a sha256 hex digest");
    const std::string actual = minivlm::manifest_digest(root);
    if (actual != recorded) {
      fail(MVLM_BAD_FILE, file.string() + " was edited after the build (its content hashes to " + actual.substr(0, 12) +
                              "..., the build recorded " + recorded.substr(0, 12) + "...); restore it or rebuild");
    }
    target_of(root);
    check_runtime(root, runtime, runtime_version);
    check_files(dir, root);
  });
}

mvlm_status mvlm_plan_runtime(const mvlm_manifest* manifest, const mvlm_runtime_request* request, mvlm_runtime_plan* plan) {
  return minivlm::guard([&] {
    require(plan, "plan");
    std::memset(plan, 0, sizeof(*plan));
    require(manifest, "manifest");
    require(request, "request");
    require(request->platform, "request.platform");
    const mvlm_runtime_request& r = *request;
    if (r.available_cores < 1) fail(MVLM_INVALID_ARGUMENT, "request.available_cores is " + str(r.available_cores) + ", expected >= 1");
    if (r.threads < 0) fail(MVLM_INVALID_ARGUMENT, "request.threads is " + str(r.threads) + ", expected 0 (auto) or a count >= 1");
    const std::string platform = r.platform;
    Plan p;
    if (platform == "android") {
      p = plan_android(manifest->json.root, r);
    } else if (platform == "ios") {
      p = plan_ios(manifest->json.root, r);
    } else {
      fail(MVLM_INVALID_ARGUMENT, "request.platform is " + shown(platform) + ", expected 'android' or 'ios'");
    }
    std::string note;
    for (const std::string& n : p.notes) note += (note.empty() ? "" : "; ") + n;
    put(plan->backend, sizeof(plan->backend), p.backend);
    put(plan->accelerator, sizeof(plan->accelerator), p.accelerator);
    put(plan->compute_units, sizeof(plan->compute_units), p.compute_units);
    put(plan->note, sizeof(plan->note), note);
    plan->threads = p.threads;
  });
}

mvlm_status mvlm_compiled_cache_path(const mvlm_manifest* manifest, const char* caches_dir, const char* graph, char* buffer,
                                     size_t capacity, size_t* length) {
  return minivlm::guard([&] {
    require(length, "length");
    *length = 0;
    require(manifest, "manifest");
    require(caches_dir, "caches_dir");
    require(graph, "graph");
    std::string dir = caches_dir;
    if (dir.empty() || dir[0] != '/') fail(MVLM_INVALID_ARGUMENT, "caches_dir is " + shown(dir) + ", expected an absolute path");
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const Value& root = manifest->json.root;
    const Value* graphs = member(root, "graphs");
    const std::string name = graph;
    if (!graphs || graphs->type != Value::Type::Object || !graphs->get(name)) {
      fail(MVLM_INVALID_ARGUMENT, "graph is " + shown(name) + ", which is not a graph of this build");
    }
    // Graphs of one multifunction package share its compiled form: the cache entry is named by the graph's file.
    const std::string file = entry(*graphs->get(name), "file");
    const std::string stem = file.substr(0, file.rfind('.'));
    const bool safe = !stem.empty() && stem != "." && stem != ".." &&
                      std::all_of(stem.begin(), stem.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'; });
    if (!safe) fail(MVLM_BAD_FILE, std::string(kManifest) + " names a graph file " + shown(file) + " that is not a plain file name");
    const std::string digest = entry(root, kDigestKey);
    if (!is_sha256(digest)) fail(MVLM_BAD_FILE, std::string(kManifest) + " /" + kDigestKey + " is not a sha256 hex digest");
    const std::string path = (dir == "/" ? "" : dir) + "/minivlm-compiled/" + digest.substr(0, 16) + "/" + stem + ".mlmodelc";
    minivlm::copy_out(path, buffer, capacity, length);
  });
}

mvlm_status mvlm_decode_size(const mvlm_manifest* manifest, int32_t width, int32_t height, int32_t* sample_size,
                             int32_t* max_side) {
  return minivlm::guard([&] {
    require(manifest, "manifest");
    require(sample_size, "sample_size");
    require(max_side, "max_side");
    *sample_size = 0;
    *max_side = 0;
    if (width < 0 || height < 0) fail(MVLM_INVALID_ARGUMENT, "image is " + str(width) + "x" + str(height) + ", sizes must not be negative");
    if (width == 0 || height == 0) fail(MVLM_BAD_INPUT, "image is " + str(width) + "x" + str(height) + ", expected at least 1x1 pixels");
    const int64_t w = width, h = height, longest = std::max(w, h);
    const int32_t s = preprocessing_size(*manifest);
    int64_t tw = s, th = s;  // EfficientVLM: the whole image stretched to S x S
    if (manifest->family == "minivlm") {  // python_ref/preprocess.py letterbox_geometry, in the same double arithmetic
      const double scale = static_cast<double>(s) / static_cast<double>(longest);
      th = std::min<int64_t>(s, std::max<int64_t>(1, static_cast<int64_t>(std::floor(static_cast<double>(h) * scale + 0.5))));
      tw = std::min<int64_t>(s, std::max<int64_t>(1, static_cast<int64_t>(std::floor(static_cast<double>(w) * scale + 0.5))));
    }
    const int64_t need_w = std::min(w, tw), need_h = std::min(h, th);
    int64_t p = 1;
    while (p < (int64_t{1} << 30) && w / (2 * p) >= need_w && h / (2 * p) >= need_h) p *= 2;
    const int64_t side = std::min(longest, std::max(ceil_div(need_w * longest, w), ceil_div(need_h * longest, h)));
    *sample_size = static_cast<int32_t>(p);
    *max_side = static_cast<int32_t>(side);
  });
}

}  // extern "C"
