// libFuzzer target: the JSON reader. Malformed text is MVLM_BAD_FILE with a message; accepted text is walked
// through the C API (every value by its JSON Pointer, keys escaped with ~0 ~1) and written back as JSON, which
// must parse again to the same document (numbers round-trip through %.17g).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "minivlm/minivlm.h"

static void quote(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    char hex[8];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      snprintf(hex, sizeof hex, "\\u%04x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

static std::string text_at(const mvlm_json* j, const std::string& p, bool key, size_t index) {
  size_t n = 0;
  key ? mvlm_json_key(j, p.c_str(), index, nullptr, 0, &n) : mvlm_json_string(j, p.c_str(), nullptr, 0, &n);
  std::string s(n + 1, '\0');
  const mvlm_status st = key ? mvlm_json_key(j, p.c_str(), index, &s[0], s.size(), &n)
                             : mvlm_json_string(j, p.c_str(), &s[0], s.size(), &n);
  if (st != MVLM_OK) abort();
  s.resize(n);
  return s;
}

// Writes the value at pointer `p` as JSON text.
static void write(const mvlm_json* j, const std::string& p, std::string& out) {
  int32_t type = -1;
  if (mvlm_json_type(j, p.c_str(), &type) != MVLM_OK) abort();
  size_t size = 0;
  double number = 0;
  int32_t boolean = 0;
  switch (type) {
    case MVLM_JSON_NULL: out += "null"; return;
    case MVLM_JSON_BOOL: mvlm_json_bool(j, p.c_str(), &boolean); out += boolean ? "true" : "false"; return;
    case MVLM_JSON_NUMBER: {
      if (mvlm_json_number(j, p.c_str(), &number) != MVLM_OK) abort();
      char buf[40];
      snprintf(buf, sizeof buf, "%.17g", number);
      out += std::isnan(number) ? "NaN" : std::isinf(number) ? (number > 0 ? "Infinity" : "-Infinity") : buf;
      return;
    }
    case MVLM_JSON_STRING: quote(text_at(j, p, false, 0), out); return;
    case MVLM_JSON_ARRAY:
    case MVLM_JSON_OBJECT: break;
    default: abort();
  }
  if (mvlm_json_size(j, p.c_str(), &size) != MVLM_OK) abort();
  out += type == MVLM_JSON_ARRAY ? '[' : '{';
  for (size_t i = 0; i < size; ++i) {
    if (i) out += ',';
    if (type == MVLM_JSON_ARRAY) {
      write(j, p + "/" + std::to_string(i), out);
      continue;
    }
    const std::string key = text_at(j, p, true, i);
    if (key.find('\0') != std::string::npos) {  // a C-string pointer cannot name it
      quote(key, out);
      out += ":null";
      continue;
    }
    std::string token;
    for (char c : key) token += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
    quote(key, out);
    out += ':';
    write(j, p + "/" + token, out);  // a repeated key resolves to its last value, as in Python
  }
  out += type == MVLM_JSON_ARRAY ? ']' : '}';
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mvlm_json* j = nullptr;
  const mvlm_status s = mvlm_json_parse(reinterpret_cast<const char*>(data), size, &j);
  if (s != MVLM_OK) {
    if (s != MVLM_BAD_FILE || j != nullptr || mvlm_last_error()[0] == '\0') abort();
    return 0;
  }
  std::string once, twice;
  write(j, "", once);
  mvlm_json_free(j);
  if (mvlm_json_parse(once.data(), once.size(), &j) != MVLM_OK) abort();
  write(j, "", twice);
  mvlm_json_free(j);
  if (once != twice) abort();
  return 0;
}
