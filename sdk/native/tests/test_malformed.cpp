// Malformed input returns an error status with a message, never a crash (run under ASan/UBSan too): bad UTF-8,
// bad vocab files, truncated and hostile JSON (every prefix of a real manifest and of a golden index), wrong
// manifest fields, zero-size and odd images, NULL pointers, short buffers, bad options, failing callbacks.
// Usage: test_malformed MANIFEST_JSON VOCAB_TXT INDEX_JSON
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "golden.hpp"

namespace {

const char kTinyVocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##s\nworld\n";

// A status check that also wants a non-empty message naming something.
bool fails_with(check::Suite& s, mvlm_status got, mvlm_status want, const std::string& what, const char* mention = nullptr) {
  const std::string message = mvlm_last_error();
  bool ok = got == want && !message.empty() && message.find('\n') == std::string::npos;
  if (mention) ok = ok && message.find(mention) != std::string::npos;
  return s.ok(ok, what + ": " + mvlm_status_name(got) + " (want " + mvlm_status_name(want) + ") '" + message + "'");
}

void tokenizer_files(check::Suite& s, const char* vocab_path) {
  mvlm_tokenizer* t = nullptr;
  fails_with(s, mvlm_tokenizer_parse("", 0, &t), MVLM_BAD_FILE, "empty vocab", "empty");
  s.ok(t == nullptr, "no handle for an empty vocab");
  fails_with(s, mvlm_tokenizer_parse("\n", 1, &t), MVLM_BAD_FILE, "vocab of one empty line", "line 1");
  const std::string missing = "[PAD]\n[UNK]\n[CLS]\nhello\n";
  fails_with(s, mvlm_tokenizer_parse(missing.data(), missing.size(), &t), MVLM_BAD_FILE, "vocab without [SEP] [MASK]", "[SEP], [MASK]");
  const std::string repeated = std::string(kTinyVocab) + "hello\n";
  fails_with(s, mvlm_tokenizer_parse(repeated.data(), repeated.size(), &t), MVLM_BAD_FILE, "repeated token", "line 9");
  const std::string spaced = std::string(kTinyVocab) + "two words\n";
  fails_with(s, mvlm_tokenizer_parse(spaced.data(), spaced.size(), &t), MVLM_BAD_FILE, "token with a space", "two words");
  const std::string nbsp = std::string(kTinyVocab) + "a\xc2\xa0" "b\n";
  fails_with(s, mvlm_tokenizer_parse(nbsp.data(), nbsp.size(), &t), MVLM_BAD_FILE, "token with a no-break space");
  const std::string blank = "[PAD]\n\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  fails_with(s, mvlm_tokenizer_parse(blank.data(), blank.size(), &t), MVLM_BAD_FILE, "empty line inside", "line 2");
  const std::string latin1 = std::string(kTinyVocab) + "caf\xe9\n";
  fails_with(s, mvlm_tokenizer_parse(latin1.data(), latin1.size(), &t), MVLM_BAD_FILE, "vocab not UTF-8", "byte 50");
  fails_with(s, mvlm_tokenizer_load("/nonexistent/vocab.txt", &t), MVLM_IO_ERROR, "missing vocab file", "/nonexistent/vocab.txt");
  fails_with(s, mvlm_tokenizer_load(nullptr, &t), MVLM_INVALID_ARGUMENT, "NULL vocab path");
  fails_with(s, mvlm_tokenizer_parse(kTinyVocab, sizeof(kTinyVocab) - 1, nullptr), MVLM_INVALID_ARGUMENT, "NULL out");
  fails_with(s, mvlm_tokenizer_parse(nullptr, 5, &t), MVLM_INVALID_ARGUMENT, "NULL text with a length");
  // Windows line ends read as Python reads them (universal newlines).
  const std::string crlf = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n";
  s.status(mvlm_tokenizer_parse(crlf.data(), crlf.size(), &t), "CRLF vocab");
  int32_t size = 0;
  if (t) s.ok(mvlm_tokenizer_vocab_size(t, &size) == MVLM_OK && size == 6, "CRLF vocab has 6 tokens");
  mvlm_tokenizer_free(t);
  mvlm_tokenizer_free(nullptr);  // allowed
  golden::TokenizerPtr real = golden::load_tokenizer(vocab_path);
  s.ok(std::string(mvlm_last_error()).empty(), "no error after a success");
}

void tokenizer_inputs(check::Suite& s) {
  mvlm_tokenizer* raw = nullptr;
  golden::must(mvlm_tokenizer_parse(kTinyVocab, sizeof(kTinyVocab) - 1, &raw), "tiny vocab");
  golden::TokenizerPtr t(raw);
  int64_t ids[16];
  size_t count = 99;
  const char* bad[] = {"\xff", "abc\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "ok \x80", "\xe2\x82", "\xf0\x9f\x98"};
  for (const char* text : bad) {
    fails_with(s, mvlm_tokenize(t.get(), text, std::strlen(text), ids, 16, &count), MVLM_BAD_INPUT,
               "bad UTF-8 " + std::to_string(std::strlen(text)) + " bytes", "UTF-8");
  }
  const std::string nul("hello\0world", 11);  // an embedded NUL is a control character: dropped, as python_ref
  s.status(mvlm_tokenize(t.get(), nul.data(), nul.size(), ids, 16, &count), "embedded NUL");
  s.ok(count == 1 && ids[0] == 1, "embedded NUL joins hello and world into one word, [UNK] in the tiny vocab");
  fails_with(s, mvlm_tokenize(nullptr, "a", 1, ids, 16, &count), MVLM_INVALID_ARGUMENT, "NULL tokenizer");
  fails_with(s, mvlm_tokenize(t.get(), nullptr, 3, ids, 16, &count), MVLM_INVALID_ARGUMENT, "NULL text");
  fails_with(s, mvlm_tokenize(t.get(), "hello", 5, ids, 16, nullptr), MVLM_INVALID_ARGUMENT, "NULL count");
  fails_with(s, mvlm_tokenize(t.get(), "hello worlds", 12, ids, 2, &count), MVLM_BUFFER_TOO_SMALL, "short id buffer");
  s.ok(count == 3, "the needed id count is reported");
  fails_with(s, mvlm_tokenize(t.get(), "hello", 5, nullptr, 4, &count), MVLM_INVALID_ARGUMENT, "NULL ids with capacity");
  s.status(mvlm_tokenize(t.get(), nullptr, 0, nullptr, 0, &count), "empty text");
  s.ok(count == 0, "empty text has no ids");
  const int64_t out_of_range[] = {5, 8};
  const int64_t negative[] = {-1};
  char buf[64];
  size_t len = 0;
  fails_with(s, mvlm_detokenize(t.get(), out_of_range, 2, buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "id past the vocab", "token id 8");
  fails_with(s, mvlm_detokenize(t.get(), negative, 1, buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "negative id", "token id -1");
  const int64_t words[] = {5, 6, 7};
  fails_with(s, mvlm_detokenize(t.get(), words, 3, buf, 4, &len), MVLM_BUFFER_TOO_SMALL, "short text buffer");
  s.ok(len == std::strlen("hellos world") && buf[0] == '\0', "needed length reported, buffer left empty");
  fails_with(s, mvlm_detokenize(t.get(), words, 3, nullptr, 10, &len), MVLM_INVALID_ARGUMENT, "NULL text buffer");
  fails_with(s, mvlm_token_text(t.get(), 100, buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "token_text out of range");
  fails_with(s, mvlm_tokenizer_special_ids(t.get(), nullptr), MVLM_INVALID_ARGUMENT, "NULL special ids");
}

// Truncation lengths of `text` that cut before its closing brace: every one of the first and last 300 bytes,
// and ~600 evenly spaced ones in between (each parse is linear, and this runs under ASan too).
std::vector<size_t> truncations(const std::string& text) {
  const size_t end = text.rfind('}');
  std::vector<size_t> out;
  const size_t stride = std::max<size_t>(1, end / 600);
  for (size_t n = 0; n <= end; ++n) {
    if (n < 300 || n + 300 > end || n % stride == 0) out.push_back(n);
  }
  return out;
}

bool parse_ok(const std::string& text) {
  mvlm_json* j = nullptr;
  const mvlm_status st = mvlm_json_parse(text.data(), text.size(), &j);
  mvlm_json_free(j);
  return st == MVLM_OK;
}

void json_inputs(check::Suite& s, const std::string& manifest_text, const std::string& index_text) {
  struct Case {
    const char* text;
    bool valid;
  };
  const Case cases[] = {
      {"", false}, {" ", false}, {"{", false}, {"[1,", false}, {"[1,]", false}, {"{\"a\":}", false}, {"{\"a\" 1}", false},
      {"{\"a\":1,}", false}, {"{a:1}", false}, {"\"abc", false}, {"\"a\\x\"", false}, {"\"\\u12\"", false},
      {"\"\\ud800\"", false}, {"\"\\udc00x\"", false}, {"\"tab\there\"", false}, {"\"\xff\"", false}, {"01", false},
      {"1.", false}, {"-", false}, {"1e", false}, {".5", false}, {"+1", false}, {"tru", false}, {"nul", false},
      {"[] []", false}, {"1 2", false}, {"\"\\ud83d\\ude00\"", true}, {"NaN", true}, {"-Infinity", true}, {"1e999", true},
      {"{\"a\":[1,2,{\"b\":null}],\"a\":true}", true}, {" [ ] ", true}, {"-0.5e-3", true}, {"\"caf\xc3\xa9\"", true},
  };
  for (const Case& c : cases) s.ok(parse_ok(c.text) == c.valid, std::string("JSON '") + c.text + "' is " + (c.valid ? "valid" : "invalid"));
  mvlm_json* j = nullptr;
  const std::string deep_array(200000, '[');
  fails_with(s, mvlm_json_parse(deep_array.data(), deep_array.size(), &j), MVLM_BAD_FILE, "200000 nested arrays", "nesting");
  std::string deep_object;
  for (int i = 0; i < 100000; ++i) deep_object += "{\"a\":";
  fails_with(s, mvlm_json_parse(deep_object.data(), deep_object.size(), &j), MVLM_BAD_FILE, "100000 nested objects", "nesting");
  fails_with(s, mvlm_json_parse("[1,", 3, &j), MVLM_BAD_FILE, "truncated JSON", "ends early at byte 3");
  fails_with(s, mvlm_json_load("/nonexistent.json", &j), MVLM_IO_ERROR, "missing JSON file");
  // Prefixes of real files are errors, never crashes.
  for (const std::string* text : {&manifest_text, &index_text}) {
    size_t ok_prefixes = 0, tried = 0;
    for (size_t n : truncations(*text)) {
      ok_prefixes += parse_ok(text->substr(0, n));
      ++tried;
    }
    s.ok(ok_prefixes == 0, std::to_string(ok_prefixes) + " of " + std::to_string(tried) + " truncated " +
                               (text == &manifest_text ? "manifest.json" : "index.json") + " prefixes parse");
    s.ok(parse_ok(*text), "the whole file parses");
  }
  // Pointers.
  const char doc[] = "{\"a/b\":{\"~k\":[10,\"s\",true]},\"n\":null}";
  golden::must(mvlm_json_parse(doc, sizeof(doc) - 1, &j), "pointer doc");
  double v = 0;
  int32_t type = -1, flag = 0;
  size_t size = 0, len = 0;
  char buf[8];
  s.ok(mvlm_json_number(j, "/a~1b/~0k/0", &v) == MVLM_OK && v == 10, "escaped pointer /a~1b/~0k/0");
  s.ok(mvlm_json_type(j, "/n", &type) == MVLM_OK && type == MVLM_JSON_NULL, "null type");
  s.ok(mvlm_json_bool(j, "/a~1b/~0k/2", &flag) == MVLM_OK && flag == 1, "bool");
  s.ok(mvlm_json_size(j, "", &size) == MVLM_OK && size == 2, "root object size");
  s.ok(mvlm_json_key(j, "", 1, buf, sizeof(buf), &len) == MVLM_OK && std::string(buf) == "n", "second key");
  fails_with(s, mvlm_json_number(j, "/a~1b/~0k/1", &v), MVLM_INVALID_ARGUMENT, "string read as a number", "a string");
  fails_with(s, mvlm_json_number(j, "/a~1b/~0k/3", &v), MVLM_INVALID_ARGUMENT, "index past the array", "array of 3");
  fails_with(s, mvlm_json_number(j, "/a~1b/~0k/01", &v), MVLM_INVALID_ARGUMENT, "leading zero index");
  fails_with(s, mvlm_json_number(j, "/missing", &v), MVLM_INVALID_ARGUMENT, "missing key", "/missing");
  fails_with(s, mvlm_json_number(j, "a", &v), MVLM_INVALID_ARGUMENT, "pointer without '/'");
  fails_with(s, mvlm_json_number(j, nullptr, &v), MVLM_INVALID_ARGUMENT, "NULL pointer string");
  fails_with(s, mvlm_json_size(j, "/n", &size), MVLM_INVALID_ARGUMENT, "size of null");
  fails_with(s, mvlm_json_key(j, "", 2, buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "key index past the end");
  fails_with(s, mvlm_json_string(j, "/a~1b/~0k/1", buf, 1, &len), MVLM_BUFFER_TOO_SMALL, "string into 1 byte");
  s.ok(len == 1, "string length reported");
  mvlm_json_free(j);
  // Numbers at the ends of float64, read as Python reads them, with any C++ standard library (libc++, which the
  // apps build with, flags subnormal results as a range error where libstdc++ does not).
  const struct {
    const char* text;
    double value;
  } numbers[] = {{"1e-310", 1e-310}, {"-5e-324", -5e-324}, {"2.4703282292062328e-324", 5e-324},
                 {"2.2250738585072014e-308", 2.2250738585072014e-308}, {"1e-400", 0.0}, {"-1e-400", -0.0},
                 {"1e400", HUGE_VAL}, {"-1.8e308", -HUGE_VAL}, {"1.7976931348623157e308", 1.7976931348623157e308},
                 {"123456789012345678901234567890", 1.2345678901234568e29}};
  for (const auto& n : numbers) {
    golden::must(mvlm_json_parse(n.text, std::strlen(n.text), &j), n.text);
    v = 0.5;
    const bool read = mvlm_json_number(j, "", &v) == MVLM_OK;
    char what[160];
    std::snprintf(what, sizeof what, "JSON %s reads as %.17g (Python: %.17g)", n.text, v, n.value);
    s.ok(read && v == n.value && std::signbit(v) == std::signbit(n.value), what);
    mvlm_json_free(j);
  }
}

std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) throw std::runtime_error("the manifest has no '" + from + "'");
  return text.replace(at, from.size(), to);
}

// `text` with fusion/heads_per_layer set to `list` (JSON): the entry replaced if the manifest has one (builds
// record it, empty for an unpruned model), else added before num_heads.
std::string with_heads_per_layer(const std::string& text, const std::string& list) {
  const std::string key = "\"heads_per_layer\": ";
  const size_t at = text.find(key);
  if (at == std::string::npos) return replace_once(text, "\"num_heads\": ", key + list + ", \"num_heads\": ");
  const size_t end = text.find(']', at);
  return text.substr(0, at + key.size()) + list + text.substr(end + 1);
}

void manifest_inputs(check::Suite& s, const std::string& text, const std::string& manifest_path) {
  mvlm_manifest* m = nullptr;
  size_t accepted = 0;
  for (size_t n : truncations(text)) {
    const mvlm_status st = mvlm_manifest_parse(text.data(), n, nullptr, &m);
    accepted += st == MVLM_OK;
    mvlm_manifest_free(m);
    m = nullptr;
  }
  s.ok(accepted == 0, "no truncated manifest is accepted");
  fails_with(s, mvlm_manifest_parse(text.data(), text.size() / 2, nullptr, &m), MVLM_BAD_FILE, "half a manifest", "manifest.json");
  const std::string schema = replace_once(text, "\"schema_version\": 1", "\"schema_version\": 2");
  fails_with(s, mvlm_manifest_parse(schema.data(), schema.size(), nullptr, &m), MVLM_BAD_FILE, "schema 2", "schema_version 2");
  const std::string typed = replace_once(text, "\"image_size\": ", "\"image_size\": \"256\", \"x\": ");
  fails_with(s, mvlm_manifest_parse(typed.data(), typed.size(), nullptr, &m), MVLM_BAD_FILE, "image_size as a string",
             "/model/config/tee/image_size is a string");
  const std::string fractional = replace_once(text, "\"max_regions\": ", "\"max_regions\": 2.5, \"y\": ");
  fails_with(s, mvlm_manifest_parse(fractional.data(), fractional.size(), nullptr, &m), MVLM_BAD_FILE, "fractional count", "integer");
  const std::string order = replace_once(text, "\"region_order\": \"", "\"region_order\": \"sideways\", \"z\": \"");
  fails_with(s, mvlm_manifest_parse(order.data(), order.size(), nullptr, &m), MVLM_BAD_FILE, "unknown region order", "sideways");
  const std::string heads = replace_once(text, "\"num_heads\": ", "\"num_heads\": 7, \"w\": ");
  fails_with(s, mvlm_manifest_parse(heads.data(), heads.size(), nullptr, &m), MVLM_BAD_FILE, "heads not dividing hidden", "num_heads 7");
  // A pruned encoder: the caption caches carry the most heads a layer keeps, head_dim stays.
  mvlm_config base{}, pruned_config{};
  golden::must(mvlm_manifest_parse(text.data(), text.size(), nullptr, &m), "the manifest");
  golden::must(mvlm_manifest_config(m, &base), "its config");
  mvlm_manifest_free(m);
  m = nullptr;
  const int32_t model_heads = base.hidden_size / base.head_dim;  // the model's, whatever the manifest keeps
  std::string per_layer = "[";
  for (int32_t i = 0; i < base.num_layers; ++i) {
    per_layer += (i ? ", " : "") + std::to_string(i == 1 ? model_heads - 1 : i % 2);  // 0, heads - 1, 0, 1, ...
  }
  const std::string pruned = with_heads_per_layer(text, per_layer + "]");
  golden::must(mvlm_manifest_parse(pruned.data(), pruned.size(), nullptr, &m), "a pruned encoder's manifest");
  golden::must(mvlm_manifest_config(m, &pruned_config), "its config");
  s.ok(pruned_config.num_heads == model_heads - 1 && pruned_config.head_dim == base.head_dim,
       "a pruned encoder's caches carry the most heads a layer keeps, head_dim unchanged");
  mvlm_manifest_free(m);
  m = nullptr;
  const std::string empty = with_heads_per_layer(text, "[]");
  golden::must(mvlm_manifest_parse(empty.data(), empty.size(), nullptr, &m), "an empty heads_per_layer");
  golden::must(mvlm_manifest_config(m, &pruned_config), "its config");
  s.ok(pruned_config.num_heads == model_heads, "an empty heads_per_layer is num_heads in every layer");
  mvlm_manifest_free(m);
  m = nullptr;
  const std::string short_list = with_heads_per_layer(text, "[1]");
  fails_with(s, mvlm_manifest_parse(short_list.data(), short_list.size(), nullptr, &m), MVLM_BAD_FILE,
             "heads_per_layer of the wrong length", "heads_per_layer has 1 entries");
  std::string over = "[" + std::to_string(model_heads + 1);
  for (int32_t i = 1; i < base.num_layers; ++i) over += ", 0";
  const std::string too_many = with_heads_per_layer(text, over + "]");
  fails_with(s, mvlm_manifest_parse(too_many.data(), too_many.size(), nullptr, &m), MVLM_BAD_FILE,
             "more heads in a layer than num_heads", ("heads_per_layer/0 is " + std::to_string(model_heads + 1)).c_str());
  const std::string specials = replace_once(text, "\"[SEP]\": ", "\"[SEP]\": -4, \"v\": ");
  fails_with(s, mvlm_manifest_parse(specials.data(), specials.size(), nullptr, &m), MVLM_BAD_FILE, "negative special id",
             "config.sep_id is -4");
  const std::string escape = replace_once(text, "\"vocabularies_file\": \"", "\"vocabularies_file\": \"../../etc/passwd\", \"u\": \"");
  golden::must(mvlm_manifest_parse(escape.data(), escape.size(), "/tmp", &m), "manifest naming an outside file");
  int32_t n = 0;
  fails_with(s, mvlm_manifest_num_classes(m, &n), MVLM_BAD_FILE, "vocabularies file outside the folder", "inside the build folder");
  fails_with(s, mvlm_manifest_num_classes(m, &n), MVLM_BAD_FILE, "the same error on a second call", "inside the build folder");
  mvlm_manifest_free(m);
  m = nullptr;
  fails_with(s, mvlm_manifest_load("/nonexistent/manifest.json", &m), MVLM_IO_ERROR, "missing manifest", "/nonexistent");
  golden::ManifestPtr real = golden::load_manifest(manifest_path);
  char buf[16];
  size_t len = 0;
  fails_with(s, mvlm_manifest_file(real.get(), "no_such_graph", buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "unknown graph",
             "no_such_graph");
  fails_with(s, mvlm_manifest_class_name(real.get(), 1000, buf, sizeof(buf), &len), MVLM_INVALID_ARGUMENT, "class 1000", "1000");
  s.ok(mvlm_manifest_json(nullptr) == nullptr, "json of a NULL manifest is NULL");
  s.ok(mvlm_manifest_json(real.get()) != nullptr, "json of a manifest");
}

void images(check::Suite& s, const mvlm_config& c) {
  const size_t n = 3 * static_cast<size_t>(c.image_size) * static_cast<size_t>(c.image_size);
  std::vector<float> out(n);
  std::vector<uint8_t> pixels(4 * 1000 * 7, 200);
  mvlm_letterbox box{};
  fails_with(s, mvlm_preprocess(&c, pixels.data(), 0, 10, 0, MVLM_PIXELS_RGB8, out.data(), n, &box), MVLM_BAD_INPUT, "0-wide image", "10x0");
  fails_with(s, mvlm_preprocess(&c, pixels.data(), 10, 0, 30, MVLM_PIXELS_RGB8, out.data(), n, &box), MVLM_BAD_INPUT, "0-high image", "0x10");
  fails_with(s, mvlm_preprocess(&c, pixels.data(), -3, -3, 30, MVLM_PIXELS_RGB8, out.data(), n, &box), MVLM_BAD_INPUT, "negative size");
  fails_with(s, mvlm_preprocess(&c, nullptr, 2, 2, 6, MVLM_PIXELS_RGB8, out.data(), n, &box), MVLM_INVALID_ARGUMENT, "NULL pixels");
  fails_with(s, mvlm_preprocess(&c, pixels.data(), 2, 2, 6, 9, out.data(), n, &box), MVLM_INVALID_ARGUMENT, "unknown pixel format", "9");
  fails_with(s, mvlm_preprocess(&c, pixels.data(), 4, 2, 15, MVLM_PIXELS_RGBA8, out.data(), n, &box), MVLM_INVALID_ARGUMENT,
             "rows shorter than the width", "row_bytes is 15");
  fails_with(s, mvlm_preprocess(&c, pixels.data(), 2, 2, 6, MVLM_PIXELS_RGB8, out.data(), n - 1, &box), MVLM_INVALID_ARGUMENT, "short output");
  fails_with(s, mvlm_preprocess(nullptr, pixels.data(), 2, 2, 6, MVLM_PIXELS_RGB8, out.data(), n, &box), MVLM_INVALID_ARGUMENT, "NULL config");
  // Odd shapes work and stay finite: 1x1, 1 row, 1 column, 7x3, 1000x7.
  const int shapes[][2] = {{1, 1}, {1, 1000}, {1000, 1}, {7, 3}, {1000, 7}};
  for (const auto& shape : shapes) {
    const int h = shape[0], w = shape[1];
    std::vector<uint8_t> img(static_cast<size_t>(h) * static_cast<size_t>(w) * 4);
    for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<uint8_t>(i * 37);
    const std::string label = std::to_string(h) + "x" + std::to_string(w) + " image";
    s.status(mvlm_preprocess(&c, img.data(), w, h, static_cast<size_t>(w) * 4, MVLM_PIXELS_BGRA8, out.data(), n, &box), label);
    bool finite = true;
    for (float v : out) finite = finite && std::isfinite(v);
    s.ok(finite && box.resized_height >= 1 && box.resized_width >= 1 && box.resized_height <= c.image_size &&
             box.resized_width <= c.image_size, label + ": finite output inside the square");
  }
}

void host_steps(check::Suite& s, const mvlm_config& c, const char* vocab_path) {
  size_t num_anchors = 0;
  golden::must(mvlm_anchor_count(&c, &num_anchors, nullptr), "anchor count");
  std::vector<float> anchors(4 * num_anchors), deltas(4 * num_anchors, 0.0f), objectness(num_anchors, 0.0f);
  const size_t k = static_cast<size_t>(c.post_nms_top_n);
  std::vector<float> proposals(4 * k);
  std::vector<uint8_t> valid(k);
  fails_with(s, mvlm_make_anchors(&c, anchors.data(), num_anchors - 1), MVLM_INVALID_ARGUMENT, "short anchor buffer");
  golden::must(mvlm_make_anchors(&c, anchors.data(), num_anchors), "anchors");
  fails_with(s, mvlm_select_proposals(&c, objectness.data(), deltas.data(), anchors.data(), num_anchors - 3, proposals.data(),
                                      valid.data()), MVLM_INVALID_ARGUMENT, "wrong anchor count", "num_anchors");
  fails_with(s, mvlm_select_proposals(&c, nullptr, deltas.data(), anchors.data(), num_anchors, proposals.data(), valid.data()),
             MVLM_INVALID_ARGUMENT, "NULL objectness", "objectness");
  // Non-finite network outputs are data, not crashes.
  for (size_t i = 0; i < num_anchors; ++i) {
    objectness[i] = i % 3 == 0 ? NAN : (i % 3 == 1 ? INFINITY : -1.0f);
    deltas[4 * i + 2] = i % 5 == 0 ? INFINITY : (i % 5 == 1 ? NAN : 80.0f);
  }
  s.status(mvlm_select_proposals(&c, objectness.data(), deltas.data(), anchors.data(), num_anchors, proposals.data(), valid.data()),
           "proposals from NaN/inf outputs");
  const size_t nc = static_cast<size_t>(c.num_classes), m = static_cast<size_t>(c.max_regions);
  std::vector<float> logits(k * nc, NAN), box_deltas(k * nc * 4, INFINITY), boxes(4 * m), scores(m);
  std::vector<int64_t> labels(m), rows(m);
  mvlm_regions regions{0, boxes.data(), labels.data(), scores.data(), rows.data()};
  s.status(mvlm_select_regions(&c, proposals.data(), valid.data(), k, logits.data(), box_deltas.data(), &regions),
           "regions from NaN logits");
  mvlm_regions missing{0, nullptr, labels.data(), scores.data(), rows.data()};
  fails_with(s, mvlm_select_regions(&c, proposals.data(), valid.data(), k, logits.data(), box_deltas.data(), &missing),
             MVLM_INVALID_ARGUMENT, "regions without a boxes buffer", "regions->boxes");
  size_t kept = 0;
  s.status(mvlm_nms(nullptr, nullptr, 0, 0.5, nullptr, &kept), "NMS of nothing");
  const float nan_boxes[8] = {NAN, 0, 1, 1, 0, 0, 1, 1};
  const float nan_scores[2] = {NAN, 0.5f};
  int64_t keep[2];
  s.status(mvlm_nms(nan_boxes, nan_scores, 2, 0.5, keep, &kept), "NMS with NaN");
  s.ok(kept == 2 && keep[0] == 0 && keep[1] == 1, "NaN sorts first and never suppresses (torch semantics)");
  // Region tokens: a bad proposal index, too many regions, a bad letterbox.
  const size_t d = static_cast<size_t>(c.representation_size);
  std::vector<float> features(k * d, 1.0f), tokens(m * (d + 6));
  rows[0] = static_cast<int64_t>(k);
  regions.count = 1;
  mvlm_letterbox box{100, 80, 2.56, 256, 205};
  fails_with(s, mvlm_region_tokens(&c, &regions, features.data(), k, &box, tokens.data(), nullptr), MVLM_INVALID_ARGUMENT,
             "proposal index past the proposals", "proposal_indices[0]");
  regions.count = c.max_regions + 1;
  fails_with(s, mvlm_region_tokens(&c, &regions, features.data(), k, &box, tokens.data(), nullptr), MVLM_INVALID_ARGUMENT, "too many regions");
  regions.count = 1;
  rows[0] = 0;
  box.scale = 0.0;
  fails_with(s, mvlm_region_tokens(&c, &regions, features.data(), k, &box, tokens.data(), nullptr), MVLM_INVALID_ARGUMENT, "zero scale");
  // Packing.
  golden::TokenizerPtr tok = golden::load_tokenizer(vocab_path);
  const size_t tt = static_cast<size_t>(c.max_text_tags_len), rd = static_cast<size_t>(c.region_dim);
  std::vector<int64_t> ids(tt), types(tt);
  std::vector<float> mask(tt), packed(m * rd), region_mask(m), region_tokens((m + 1) * rd, 0.5f);
  mvlm_fusion_inputs out{ids.data(), types.data(), mask.data(), packed.data(), region_mask.data()};
  const char* tags[] = {"red circle", nullptr};
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "", 0, tags, 1, region_tokens.data(), 1, 1, &out), MVLM_BAD_INPUT, "empty question", "no tokens");
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "  \t", 3, tags, 1, region_tokens.data(), 1, 1, &out), MVLM_BAD_INPUT, "blank question");
  const std::string long_text(400, 'a');
  std::string many_words;
  for (int i = 0; i < 200; ++i) many_words += "red ";
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, many_words.data(), many_words.size(), tags, 1, region_tokens.data(), 1, 1, &out),
             MVLM_BAD_INPUT, "200-word question", "200 tokens");
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "a\xff", 2, tags, 1, region_tokens.data(), 1, 1, &out), MVLM_BAD_INPUT, "bad UTF-8 question");
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "what?", 5, tags, 2, region_tokens.data(), 1, 1, &out), MVLM_INVALID_ARGUMENT, "NULL tag", "tags[1]");
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "what?", 5, tags, 1, region_tokens.data(), m + 1, 1, &out), MVLM_BAD_INPUT,
             "one region too many", std::to_string(m + 1).c_str());
  region_tokens[rd + 3] = NAN;
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "what?", 5, tags, 1, region_tokens.data(), 2, 1, &out), MVLM_BAD_INPUT,
             "NaN region token", "region_tokens[1][3]");
  s.status(mvlm_pack_inputs(tok.get(), &c, long_text.data(), long_text.size(), tags, 1, region_tokens.data(), 1, 1, &out),
           "a 400-letter word is one [UNK] token");
  mvlm_fusion_inputs no_ids{nullptr, types.data(), mask.data(), packed.data(), region_mask.data()};
  fails_with(s, mvlm_pack_inputs(tok.get(), &c, "what?", 5, tags, 1, region_tokens.data(), 1, 1, &no_ids), MVLM_INVALID_ARGUMENT, "NULL input_ids");
}

int32_t fail_at_step_two(void*, const mvlm_step_request* r) { return r->step == 2 ? 7 : 0; }

void decoding(check::Suite& s, const mvlm_config& c) {
  const size_t tt = static_cast<size_t>(c.max_text_tags_len), m = static_cast<size_t>(c.max_regions);
  std::vector<int64_t> ids(tt), types(tt);
  std::vector<float> mask(tt, 1.0f), regions(m * static_cast<size_t>(c.region_dim)), region_mask(m, 1.0f);
  const mvlm_fusion_inputs inputs{ids.data(), types.data(), mask.data(), regions.data(), region_mask.data()};
  const size_t prefix = static_cast<size_t>(c.num_layers * c.num_heads * c.head_dim * (c.max_tags_len + c.max_regions));
  std::vector<float> keys(prefix), values(prefix);
  mvlm_caption caption{};
  mvlm_caption_options options{1, 1.0, 0};
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_CALLBACK_FAILED, "callback failing at step 2", "returned 7 at step 2");
  options.num_beams = 3;
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_CALLBACK_FAILED, "beam callback failing at step 2", "returned 7 at step 2");
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, nullptr, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "NULL callback", "step");
  options.num_beams = 0;
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "0 beams", "num_beams is 0");
  options.num_beams = c.vocab_size;
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "a beam per word", "num_beams");
  options = {1, 1.0, c.max_text_len - 1};
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "too many caption tokens", "max_caption_tokens");
  options = {2, NAN, 0};
  fails_with(s, mvlm_caption_decode(&c, &inputs, keys.data(), values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "NaN length penalty", "length_penalty");
  options = {1, 1.0, 0};
  fails_with(s, mvlm_caption_decode(&c, &inputs, nullptr, values.data(), &options, fail_at_step_two, nullptr, &caption),
             MVLM_INVALID_ARGUMENT, "NULL prefix keys", "prefix_keys");
}

void configs(check::Suite& s, const mvlm_config& good) {
  mvlm_config c = good;
  c.image_size = 0;
  fails_with(s, mvlm_config_check(&c), MVLM_INVALID_ARGUMENT, "image_size 0", "image_size");
  c = good;
  c.head_dim += 1;
  fails_with(s, mvlm_config_check(&c), MVLM_INVALID_ARGUMENT, "head_dim", "head_dim");
  c = good;
  c.num_levels = MVLM_MAX_LEVELS + 1;
  fails_with(s, mvlm_config_check(&c), MVLM_INVALID_ARGUMENT, "too many levels", "num_levels");
  c = good;
  c.aspect_ratios[0] = -1.0;
  fails_with(s, mvlm_config_check(&c), MVLM_INVALID_ARGUMENT, "negative ratio", "aspect_ratios[0]");
  c = good;
  c.region_order = 5;
  fails_with(s, mvlm_config_check(&c), MVLM_INVALID_ARGUMENT, "region order 5", "region_order");
  fails_with(s, mvlm_config_check(nullptr), MVLM_INVALID_ARGUMENT, "NULL config", "config");
  s.status(mvlm_config_check(&good), "the manifest's config");
  s.ok(std::string(mvlm_status_name(MVLM_BAD_FILE)) == "MVLM_BAD_FILE" && std::string(mvlm_status_name(1234)) == "MVLM_UNKNOWN",
       "status names");
  s.ok(mvlm_api_version() == MVLM_API_VERSION, "API version");
  // The last error is per thread.
  mvlm_tokenizer* t = nullptr;
  mvlm_tokenizer_parse("", 0, &t);
  const std::string here = mvlm_last_error();
  std::string there;
  std::thread other([&] {
    mvlm_config_check(nullptr);
    there = mvlm_last_error();
  });
  other.join();
  s.ok(here.find("empty") != std::string::npos && there.find("config") != std::string::npos &&
           std::string(mvlm_last_error()) == here, "last error is thread-local");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MANIFEST_JSON VOCAB_TXT INDEX_JSON\n", argv[0]);
    return 2;
  }
  check::Suite suite("malformed input");
  return suite.run([&](check::Suite& s) {
    const std::string manifest_text = golden::read(argv[1]), index_text = golden::read(argv[3]);
    golden::ManifestPtr manifest = golden::load_manifest(argv[1]);
    mvlm_config c{};
    golden::must(mvlm_manifest_config(manifest.get(), &c), "config");
    tokenizer_files(s, argv[2]);
    tokenizer_inputs(s);
    json_inputs(s, manifest_text, index_text);
    manifest_inputs(s, manifest_text, argv[1]);
    images(s, c);
    host_steps(s, c, argv[2]);
    decoding(s, c);
    configs(s, c);
  });
}
