// The build checks (minivlm.h, "Build checks") on synthetic build folders this program writes: file sha256s
// (the FIPS 180-4 example messages, so the expected digests do not come from the code under test), the
// manifest's own checksum (computed by converters/manifest.py manifest_digest, written here as a constant),
// tampered, missing and linked files, runtimes and versions, every runtime-plan rule, the compiled-cache path
// and decode sizes against hand-computed values.
// Usage: test_build_checks GOLDEN_MANIFEST_JSON [BUILD_FOLDER]  (a converted build: verified as it is)
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "check.hpp"
#include "../src/json.hpp"
#include "../src/manifest_digest.hpp"

namespace fs = std::filesystem;

namespace {

// An EfficientVLM TFLite build's manifest with values that exercise Python's canonical JSON (floats written
// as repr does, a 20-digit int, -0, non-ASCII and control characters, keys to sort). Its manifest_sha256 is
//   python -c "import json; from minivlm.converters.manifest import manifest_digest; print(manifest_digest(json.load(open('manifest.json'))))"
const char kManifest[] = R"JSON({"schema_version": 1, "family": "efficientvlm", "target": "tflite", "delegate": "nnapi", "precision": "fp32",
 "compute_units": null, "preprocessing": {"size": 224, "mean": [0.48145466, 0.4578275, 0.40821073]},
 "tools": {"ai-edge-litert": "2.3.0", "executorch": "1.5.1", "torch": null},
 "graphs": {"vision": {"file": "model.tflite", "signature": "vision"}, "match": {"file": "model.tflite"}},
 "tokenizer": {"vocab_file": "vocab.txt"}, "vocabularies_file": "vocabularies.json",
 "tolerances": {"max_abs": 1e-05, "psnr_db": 40.0, "tiny": 5e-324, "big": 1E16, "int": 12345678901234567890,
                "neg_zero": -0.0, "minus_zero_int": -0, "third": 0.3333333333333333, "exp": 2.5e-7, "large": 1.5e300,
                "fixed": 123456.789e3, "text": "caf\u00e9 \u2615 \u0001 \"quoted\" back\\slash / tab\t", "yes": true},
 "z_last": [], "a_first": {}, "Upper": "sorted before lower case",
 "files": {"model.tflite": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "vocab.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "vocabularies.json": "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
           "golden/long.bin": "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
           "golden/million.bin": "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
 "manifest_sha256": "463679c0dab7b69ab0b910a6b0477bbdc2dde804b550d111647ce3d5f3d6984f"})JSON";
const char kDigest[] = "463679c0dab7b69ab0b910a6b0477bbdc2dde804b550d111647ce3d5f3d6984f";

// FIPS 180-4 example messages (and a 1,000,000-byte one spanning many read chunks) as the build's files.
const std::string kTwoBlocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
const std::string kFourBlocks =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

void write(const fs::path& path, const std::string& data) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void replace(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  if (at == std::string::npos) throw std::runtime_error("test bug: '" + from + "' not in the manifest");
  s.replace(at, from.size(), to);
}

// The manifest text with its manifest_sha256 recomputed (for variants whose other checks are under test; the
// checksum itself is tested against kDigest).
std::string resealed(std::string text) {
  const minivlm::json::Value root = minivlm::json::parse(text, "variant");
  replace(text, kDigest, minivlm::manifest_digest(root));
  return text;
}

fs::path make_build(const fs::path& dir, const std::string& manifest = kManifest) {
  fs::remove_all(dir);
  write(dir / "model.tflite", "abc");
  write(dir / "vocab.txt", "");
  write(dir / "vocabularies.json", kTwoBlocks);
  write(dir / "golden" / "long.bin", kFourBlocks);
  write(dir / "golden" / "million.bin", std::string(1000000, 'a'));
  write(dir / "manifest.json", manifest);
  return dir;
}

bool fails_with(check::Suite& s, mvlm_status got, mvlm_status want, const std::string& what,
                std::initializer_list<const char*> mentions = {}) {
  const std::string message = mvlm_last_error();
  bool ok = got == want && !message.empty() && message.find('\n') == std::string::npos;
  for (const char* m : mentions) ok = ok && message.find(m) != std::string::npos;
  return s.ok(ok, what + ": " + mvlm_status_name(got) + " (want " + mvlm_status_name(want) + ") '" + message + "'");
}

void verification(check::Suite& s, const fs::path& tmp) {
  const fs::path good = make_build(tmp / "good");
  const std::string g = good.string();
  s.status(mvlm_build_verify(g.c_str(), "litert", "2.3.0"), "verify: FIPS files and Python's manifest checksum");
  s.status(mvlm_build_verify((good / "manifest.json").string().c_str(), "litert", nullptr), "verify: manifest.json path, no version");
  s.status(mvlm_build_verify(g.c_str(), "litert", "2.4.1"), "verify: a newer minor runtime");
  s.status(mvlm_build_verify(g.c_str(), "litert", "2.3.0rc1"), "verify: a pre-release of the same minor");
  fails_with(s, mvlm_build_verify(g.c_str(), "litert", "2.2.9"), MVLM_INVALID_ARGUMENT, "old runtime", {"2.2.9", "2.3.0", "2.3"});
  fails_with(s, mvlm_build_verify(g.c_str(), "litert", "3.0.0"), MVLM_INVALID_ARGUMENT, "next major runtime", {"3.0.0"});
  fails_with(s, mvlm_build_verify(g.c_str(), "litert", "two"), MVLM_INVALID_ARGUMENT, "version that is none", {"'two'"});
  fails_with(s, mvlm_build_verify(g.c_str(), "executorch", nullptr), MVLM_INVALID_ARGUMENT, "wrong runtime", {"tflite", "executorch"});
  fails_with(s, mvlm_build_verify(g.c_str(), "coreml", nullptr), MVLM_INVALID_ARGUMENT, "Core ML for a TFLite build", {"tflite"});
  fails_with(s, mvlm_build_verify(g.c_str(), "tensorflow", nullptr), MVLM_INVALID_ARGUMENT, "unknown runtime", {"tensorflow"});
  fails_with(s, mvlm_build_verify(nullptr, "litert", nullptr), MVLM_INVALID_ARGUMENT, "NULL folder");
  fails_with(s, mvlm_build_verify((tmp / "nowhere").string().c_str(), "litert", nullptr), MVLM_IO_ERROR, "no build", {"nowhere"});

  // A tampered file: its name and both hash prefixes in the message.
  const fs::path tampered = make_build(tmp / "tampered");
  write(tampered / "model.tflite", "abd");
  fails_with(s, mvlm_build_verify(tampered.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "tampered file",
             {"model.tflite", "ba7816bf8f01", "a52d159f262b"});
  const fs::path truncated = make_build(tmp / "truncated");
  write(truncated / "golden" / "million.bin", std::string(999999, 'a'));
  fails_with(s, mvlm_build_verify(truncated.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "truncated file",
             {"golden/million.bin", "cdc76e5c9914"});
  const fs::path missing = make_build(tmp / "missing");
  fs::remove(missing / "golden" / "long.bin");
  fails_with(s, mvlm_build_verify(missing.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "missing file", {"golden/long.bin", "missing"});
  const fs::path no_golden = make_build(tmp / "no_golden");  // an app may leave the parity goldens out
  fs::remove_all(no_golden / "golden");
  s.status(mvlm_build_verify(no_golden.string().c_str(), "litert", nullptr), "verify: a build shipped without golden/");
  fs::remove(no_golden / "vocab.txt");
  fails_with(s, mvlm_build_verify(no_golden.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "missing file beside no golden/",
             {"vocab.txt", "missing"});
  const fs::path folder = make_build(tmp / "folder");
  fs::remove(folder / "vocab.txt");
  fs::create_directory(folder / "vocab.txt");
  fails_with(s, mvlm_build_verify(folder.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "a folder for a file", {"vocab.txt"});
  const fs::path linked = make_build(tmp / "linked");
  fs::remove(linked / "model.tflite");
  write(tmp / "elsewhere.tflite", "abc");
  fs::create_symlink(tmp / "elsewhere.tflite", linked / "model.tflite");
  fails_with(s, mvlm_build_verify(linked.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "a symbolic link", {"symbolic link"});

  // The manifest edited after the build (the checksum left as recorded), or its checksum removed.
  std::string edited = kManifest;
  replace(edited, R"("delegate": "nnapi")", R"("delegate": "gpu")");
  fails_with(s, mvlm_build_verify(make_build(tmp / "edited", edited).string().c_str(), "litert", nullptr), MVLM_BAD_FILE,
             "edited manifest", {"edited after the build", "463679c0dab7"});
  std::string spaced = kManifest;  // whitespace and key order are not content
  replace(spaced, R"("schema_version": 1, )", "");
  replace(spaced, R"("manifest_sha256")", "\"schema_version\"  :\t1,\n \"manifest_sha256\"");
  s.status(mvlm_build_verify(make_build(tmp / "spaced", spaced).string().c_str(), "litert", nullptr), "reformatted manifest");
  std::string unsealed = kManifest;
  replace(unsealed, std::string(",\n \"manifest_sha256\": \"") + kDigest + "\"", "");
  fails_with(s, mvlm_build_verify(make_build(tmp / "unsealed", unsealed).string().c_str(), "litert", nullptr), MVLM_BAD_FILE,
             "no manifest_sha256", {"manifest_sha256"});

  // Paths leaving the folder, files the SDK reads without a checksum, tools without a version.
  std::string escape = kManifest;
  replace(escape, R"("vocab.txt": ")", R"("../vocab.txt": ")");
  fails_with(s, mvlm_build_verify(make_build(tmp / "escape", resealed(escape)).string().c_str(), "litert", nullptr), MVLM_BAD_FILE,
             "path outside the folder", {"../vocab.txt"});
  std::string unlisted = kManifest;
  replace(unlisted, R"("match": {"file": "model.tflite"})", R"("match": {"file": "match.tflite"})");
  const fs::path u = make_build(tmp / "unlisted", resealed(unlisted));
  write(u / "match.tflite", "abc");
  fails_with(s, mvlm_build_verify(u.string().c_str(), "litert", nullptr), MVLM_BAD_FILE, "graph file without a checksum",
             {"match.tflite", "no checksum"});
  // A Core ML build: its graph file is a package folder whose files the manifest lists one by one.
  std::string package = kManifest;
  replace(package, R"("target": "tflite")", R"("target": "coreml")");
  replace(package, R"("delegate": "nnapi")", R"("delegate": null)");
  replace(package, R"({"file": "model.tflite", "signature": "vision"})", R"({"file": "model.mlpackage", "function": "vision"})");
  replace(package, R"("match": {"file": "model.tflite"})", R"("match": {"file": "model.mlpackage", "function": "match"})");
  replace(package, R"("model.tflite": ")", R"("model.mlpackage/Data/weights.bin": ")");
  const fs::path pkg = make_build(tmp / "package", resealed(package));
  fs::rename(pkg / "model.tflite", tmp / "moved.tflite");
  write(pkg / "model.mlpackage" / "Data" / "weights.bin", "abc");
  s.status(mvlm_build_verify(pkg.string().c_str(), "coreml", nullptr), "verify a Core ML package build");
  std::string unlisted_package = package;
  replace(unlisted_package, R"("model.mlpackage", "function": "match")", R"("other.mlpackage", "function": "match")");
  const fs::path pkg2 = make_build(tmp / "package2", resealed(unlisted_package));
  write(pkg2 / "model.mlpackage" / "Data" / "weights.bin", "abc");
  write(pkg2 / "other.mlpackage" / "Data" / "weights.bin", "abc");
  fails_with(s, mvlm_build_verify(pkg2.string().c_str(), "coreml", nullptr), MVLM_BAD_FILE,
             "a package none of whose files is listed", {"other.mlpackage", "no checksum"});
  std::string untooled = kManifest;
  replace(untooled, R"("ai-edge-litert": "2.3.0", )", "");
  const std::string t = make_build(tmp / "untooled", resealed(untooled)).string();
  fails_with(s, mvlm_build_verify(t.c_str(), "litert", "2.3.0"), MVLM_INVALID_ARGUMENT, "no exporter version", {"ai-edge-litert"});
  s.status(mvlm_build_verify(t.c_str(), "litert", nullptr), "no exporter version, none asked");
}

void canonical_numbers(check::Suite& s) {
  // Python's repr of each (python -c 'print(repr(x))'), including the power-of-two boundary cases.
  const std::pair<double, const char*> cases[] = {
      {0.1, "0.1"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
      {-0.0, "-0.0"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"}, {2.0, "2.0"},
      {9007199254740993.0, "9007199254740992.0"}, {0.3, "0.3"}, {2.0 / 3.0, "0.6666666666666666"},
      {1.0 / 1024, "0.0009765625"}, {8.98846567431158e307, "8.98846567431158e+307"}, {123456789.0, "123456789.0"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"}, {9.5367431640625e-07, "9.5367431640625e-07"}};
  for (const auto& [x, want] : cases) {
    const std::string got = minivlm::python_float_repr(x);
    s.ok(got == want, std::string("repr ") + want + " -> " + got);
  }
}

struct Planned {
  mvlm_status status;
  mvlm_runtime_plan plan;
};

Planned plan(const mvlm_manifest* m, const char* platform, const char* accelerator, const char* units, int threads, int cores) {
  const mvlm_runtime_request r{platform, accelerator, units, threads, cores};
  Planned p{};
  p.status = mvlm_plan_runtime(m, &r, &p.plan);
  return p;
}

// A build manifest of `target` and `delegate` / `compute_units` (JSON values, "null" for none).
mvlm_manifest* manifest_of(check::Suite& s, const fs::path& tmp, const std::string& target, const std::string& delegate,
                           const std::string& units) {
  std::string text = kManifest;
  replace(text, R"("target": "tflite")", "\"target\": \"" + target + "\"");
  replace(text, R"("delegate": "nnapi")", "\"delegate\": " + delegate);
  replace(text, R"("compute_units": null)", "\"compute_units\": " + units);
  const fs::path dir = tmp / ("plan-" + target + "-" + std::to_string(std::hash<std::string>()(delegate + units)));
  write(dir / "manifest.json", text);
  mvlm_manifest* m = nullptr;
  s.status(mvlm_build_manifest_load(dir.string().c_str(), &m), "load an EfficientVLM " + target + " manifest");
  return m;
}

void expect(check::Suite& s, const Planned& p, const char* backend, const char* accelerator, const char* units, int threads,
            const char* note_mentions, const std::string& what) {
  const std::string note = p.plan.note;
  const bool ok = p.status == MVLM_OK && std::string(p.plan.backend) == backend && std::string(p.plan.accelerator) == accelerator &&
                  std::string(p.plan.compute_units) == units && p.plan.threads == threads &&
                  (note_mentions ? note.find(note_mentions) != std::string::npos : note.empty());
  s.ok(ok, what + ": " + mvlm_status_name(p.status) + " " + mvlm_last_error() + " -> " + p.plan.backend + "/" + p.plan.accelerator +
               "/" + p.plan.compute_units + "/" + std::to_string(p.plan.threads) + " note '" + note + "'");
}

void plans(check::Suite& s, const fs::path& tmp) {
  mvlm_manifest* nnapi = manifest_of(s, tmp, "tflite", "\"nnapi\"", "null");
  mvlm_manifest* gpu = manifest_of(s, tmp, "tflite", "\"gpu\"", "null");
  mvlm_manifest* xnn = manifest_of(s, tmp, "tflite", "\"xnnpack\"", "null");
  mvlm_manifest* et = manifest_of(s, tmp, "executorch", "\"xnnpack\"", "null");
  mvlm_manifest* et_coreml = manifest_of(s, tmp, "executorch", "\"coreml\"", "null");
  mvlm_manifest* coreml = manifest_of(s, tmp, "coreml", "null", "\"cpu_and_ne\"");
  mvlm_manifest* coreml_default = manifest_of(s, tmp, "coreml", "null", "null");
  mvlm_manifest* coreai = manifest_of(s, tmp, "coreai", "null", "\"neural_engine\"");
  // Android, LiteRT: auto follows the delegate; NNAPI goes to LiteRT's NPU accelerator with a note.
  expect(s, plan(nnapi, "android", "auto", nullptr, 0, 8), "litert", "npu", "", 4, "NNAPI", "android tflite nnapi auto, 8 cores");
  expect(s, plan(nnapi, "android", "cpu", "auto", 0, 2), "litert", "cpu", "", 2, nullptr, "android tflite nnapi cpu, 2 cores");
  expect(s, plan(gpu, "android", nullptr, nullptr, 3, 8), "litert", "gpu", "", 3, nullptr, "android tflite gpu auto, 3 threads");
  expect(s, plan(xnn, "android", "auto", nullptr, 0, 1), "litert", "cpu", "", 1, nullptr, "android tflite xnnpack auto, 1 core");
  expect(s, plan(xnn, "android", "gpu", nullptr, 0, 6), "litert", "gpu", "", 4, nullptr, "android tflite xnnpack, gpu asked");
  expect(s, plan(gpu, "android", "npu", nullptr, 6, 4), "litert", "npu", "", 4, "6 threads requested", "android more threads than cores");
  // Android, ExecuTorch: CPU only.
  expect(s, plan(et, "android", "auto", nullptr, 0, 8), "executorch", "cpu", "", 4, nullptr, "android executorch auto");
  expect(s, plan(et, "android", "cpu", nullptr, 2, 8), "executorch", "cpu", "", 2, nullptr, "android executorch cpu, 2 threads");
  fails_with(s, plan(et, "android", "gpu", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "android executorch gpu",
             {"xnnpack", "--target tflite --delegate gpu"});
  fails_with(s, plan(et, "android", "npu", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "android executorch npu", {"xnnpack", "nnapi"});
  fails_with(s, plan(et_coreml, "android", "auto", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "android executorch coreml delegate", {"Core ML"});
  fails_with(s, plan(coreml, "android", "auto", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "android coreml build", {"coreml", "iOS"});
  fails_with(s, plan(coreai, "android", "auto", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "android coreai build", {"coreai"});
  fails_with(s, plan(xnn, "android", "auto", "all", 0, 8).status, MVLM_INVALID_ARGUMENT, "compute units on android", {"'all'"});
  fails_with(s, plan(xnn, "android", "tpu", nullptr, 0, 8).status, MVLM_INVALID_ARGUMENT, "unknown accelerator", {"'tpu'"});
  fails_with(s, plan(xnn, "android", "auto", nullptr, -1, 8).status, MVLM_INVALID_ARGUMENT, "negative threads", {"-1"});
  fails_with(s, plan(xnn, "android", "auto", nullptr, 0, 0).status, MVLM_INVALID_ARGUMENT, "no cores", {"available_cores"});
  fails_with(s, plan(xnn, "windows", "auto", nullptr, 0, 4).status, MVLM_INVALID_ARGUMENT, "unknown platform", {"'windows'"});
  fails_with(s, plan(nullptr, "android", "auto", nullptr, 0, 4).status, MVLM_INVALID_ARGUMENT, "NULL manifest");
  // iOS.
  expect(s, plan(coreml, "ios", nullptr, "auto", 0, 6), "coreml", "", "cpu_and_ne", 0, nullptr, "ios coreml auto -> the build's units");
  expect(s, plan(coreml_default, "ios", "auto", "auto", 0, 6), "coreml", "", "all", 0, nullptr, "ios coreml auto, none recorded");
  expect(s, plan(coreml, "ios", nullptr, "cpu_only", 2, 6), "coreml", "", "cpu_only", 0, "Core ML schedules", "ios coreml cpu_only");
  expect(s, plan(coreai, "ios", nullptr, "auto", 0, 6), "coreai", "", "neural_engine", 0, nullptr, "ios coreai auto");
  expect(s, plan(coreai, "ios", nullptr, "all", 0, 6), "coreai", "", "default", 0, nullptr, "ios coreai all");
  expect(s, plan(coreai, "ios", nullptr, "cpu_and_gpu", 0, 6), "coreai", "", "gpu", 0, nullptr, "ios coreai cpu_and_gpu");
  expect(s, plan(coreai, "ios", nullptr, "cpu_and_ne", 0, 6), "coreai", "", "neural_engine", 0, nullptr, "ios coreai cpu_and_ne");
  expect(s, plan(et, "ios", nullptr, "auto", 0, 6), "executorch", "cpu", "", 4, nullptr, "ios executorch");
  expect(s, plan(et, "ios", nullptr, "cpu_only", 9, 6), "executorch", "cpu", "", 6, "9 threads requested", "ios executorch clamp");
  expect(s, plan(et_coreml, "ios", nullptr, "auto", 2, 6), "executorch", "", "", 2, nullptr, "ios executorch core ml delegate");
  fails_with(s, plan(et, "ios", nullptr, "cpu_and_ne", 0, 6).status, MVLM_INVALID_ARGUMENT, "ios executorch on the neural engine",
             {"xnnpack", "--target coreml"});
  fails_with(s, plan(nnapi, "ios", nullptr, "auto", 0, 6).status, MVLM_INVALID_ARGUMENT, "ios tflite build", {"tflite", "Android"});
  fails_with(s, plan(coreml, "ios", "gpu", "auto", 0, 6).status, MVLM_INVALID_ARGUMENT, "accelerator on ios", {"'gpu'"});
  fails_with(s, plan(coreml, "ios", nullptr, "npu", 0, 6).status, MVLM_INVALID_ARGUMENT, "unknown compute units", {"'npu'"});
  // An EfficientVLM manifest has no MiniVLM config.
  mvlm_config c{};
  fails_with(s, mvlm_manifest_config(coreml, &c), MVLM_BAD_FILE, "config of an EfficientVLM build", {"efficientvlm"});
  // Compiled-cache path: keyed by the manifest's checksum.
  char path[512];
  size_t n = 0;
  s.status(mvlm_compiled_cache_path(coreml, "/var/mobile/Library/Caches/", "match", path, sizeof path, &n), "cache path");
  const std::string want = std::string("/var/mobile/Library/Caches/minivlm-compiled/") + std::string(kDigest).substr(0, 16) + "/model.mlmodelc";
  s.ok(path == want && n == want.size(), std::string("cache path ") + path);
  char shared[512];  // vision and match live in one file: one compilation
  s.status(mvlm_compiled_cache_path(coreml, "/var/mobile/Library/Caches", "vision", shared, sizeof shared, &n), "cache path of vision");
  s.ok(want == shared, std::string("graphs of one file share a cache path: ") + shared);
  fails_with(s, mvlm_compiled_cache_path(coreml, "/tmp", "match", path, 10, &n), MVLM_BUFFER_TOO_SMALL, "cache path, short buffer");
  s.ok(n == std::string("/tmp/minivlm-compiled/").size() + 16 + std::string("/model.mlmodelc").size(), "needed length reported");
  fails_with(s, mvlm_compiled_cache_path(coreml, "Caches", "match", path, sizeof path, &n), MVLM_INVALID_ARGUMENT, "relative caches", {"'Caches'"});
  fails_with(s, mvlm_compiled_cache_path(coreml, "/tmp", "tee_stage1", path, sizeof path, &n), MVLM_INVALID_ARGUMENT,
             "not a graph of the build", {"'tee_stage1'"});
  for (mvlm_manifest* m : {nnapi, gpu, xnn, et, et_coreml, coreml, coreml_default, coreai}) mvlm_manifest_free(m);
}

void decode_sizes(check::Suite& s, const fs::path& tmp, const char* golden_manifest) {
  // Hand-computed (header rule): MiniVLM letterboxes into S = 256 (the golden manifest), EfficientVLM stretches
  // to S = 224 (kManifest).
  struct Case { int w, h, sample, side; };
  mvlm_manifest* mini = nullptr;
  s.status(mvlm_build_manifest_load(golden_manifest, &mini), "load the golden MiniVLM manifest");
  const Case minivlm[] = {
      {4032, 3024, 8, 256},  // need 256x192; /16 gives 252 < 256
      {3024, 4032, 8, 256},
      {1000, 1000, 2, 256},  // 500 >= 256, 250 < 256
      {1024, 1001, 4, 256},  // need 256x250: 1024/4 = 256, 1001/4 = 250; side ceil(250*1024/1001) = 256
      {1024, 1003, 2, 257},  // need 256x251: 1003/4 = 250 < 251; side ceil(251*1024/1003) = 257
      {100, 50, 1, 100},     // smaller than S: decoded as it is
      {1, 1, 1, 1},
      {8000, 10, 8, 800},    // need 256x1 (floor(0.32 + 0.5) = 0, at least 1): 10/8 = 1; side ceil(1*8000/10) = 800
  };
  for (const Case& c : minivlm) {
    int32_t sample = 0, side = 0;
    const mvlm_status st = mvlm_decode_size(mini, c.w, c.h, &sample, &side);
    s.ok(st == MVLM_OK && sample == c.sample && side == c.side, "minivlm decode " + std::to_string(c.w) + "x" + std::to_string(c.h) +
                                                                    ": sample " + std::to_string(sample) + " side " + std::to_string(side));
  }
  std::string text = kManifest;
  write(tmp / "evlm" / "manifest.json", text);
  mvlm_manifest* evlm = nullptr;
  s.status(mvlm_build_manifest_load((tmp / "evlm").string().c_str(), &evlm), "load the EfficientVLM manifest");
  const Case efficientvlm[] = {
      {4032, 3024, 8, 299},  // need 224x224; 3024/16 = 189 < 224; side ceil(224*4032/3024) = 299
      {448, 448, 2, 224},
      {300, 200, 1, 300},    // need 224x200; side ceil(200*300/200) = 300
      {1000, 230, 1, 974},   // 230/2 < 224; side ceil(224*1000/230) = 974
      {230, 1000, 1, 974},
  };
  for (const Case& c : efficientvlm) {
    int32_t sample = 0, side = 0;
    const mvlm_status st = mvlm_decode_size(evlm, c.w, c.h, &sample, &side);
    s.ok(st == MVLM_OK && sample == c.sample && side == c.side, "efficientvlm decode " + std::to_string(c.w) + "x" +
                                                                    std::to_string(c.h) + ": sample " + std::to_string(sample) +
                                                                    " side " + std::to_string(side));
  }
  int32_t sample = 0, side = 0;
  fails_with(s, mvlm_decode_size(evlm, 0, 10, &sample, &side), MVLM_BAD_INPUT, "zero-width photo", {"0x10"});
  fails_with(s, mvlm_decode_size(evlm, -3, 10, &sample, &side), MVLM_INVALID_ARGUMENT, "negative photo size", {"-3x10"});
  fails_with(s, mvlm_decode_size(evlm, 10, 10, nullptr, &side), MVLM_INVALID_ARGUMENT, "NULL sample_size");
  mvlm_manifest_free(mini);
  mvlm_manifest_free(evlm);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s GOLDEN_MANIFEST_JSON [BUILD_FOLDER]\n", argv[0]);
    return 2;
  }
  std::random_device random;
  const fs::path tmp = fs::temp_directory_path() / ("minivlm-build-checks-" + std::to_string(random()));
  fs::create_directories(tmp);
  check::Suite suite("build_checks");
  const int status = suite.run([&](check::Suite& s) {
    verification(s, tmp);
    canonical_numbers(s);
    plans(s, tmp);
    decode_sizes(s, tmp, argv[1]);
    if (argc > 2) {  // a real build: its own target's runtime, with the exporter's version
      mvlm_manifest* m = nullptr;
      s.status(mvlm_build_manifest_load(argv[2], &m), "load the build's manifest");
      const minivlm::json::Value root = minivlm::json::parse(read(fs::path(argv[2]) / "manifest.json"), "build");
      const std::string target = root.get("target")->string;
      const std::string runtime = target == "tflite" ? "litert" : target;
      const char* tool = target == "tflite" ? "ai-edge-litert" : target == "coreml" ? "coremltools" : target == "coreai" ? "coreai-core" : "executorch";
      const minivlm::json::Value* version = root.get("tools")->get(tool);
      s.status(mvlm_build_verify(argv[2], runtime.c_str(), version && version->type == minivlm::json::Value::Type::String ?
                                                               version->string.c_str() : nullptr),
               "verify the converted build " + std::string(argv[2]));
      mvlm_manifest_free(m);
    }
  });
  std::error_code ec;
  fs::remove_all(tmp, ec);
  return status;
}
