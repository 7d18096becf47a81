// Reading golden folders (a build's golden/ or tests/golden/) through the core's own JSON API: index.json plus
// raw little-endian C-order arrays, as converters/goldens.py writes them.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "minivlm/minivlm.h"

namespace golden {

inline void must(mvlm_status s, const std::string& what) {
  if (s != MVLM_OK) throw std::runtime_error(what + ": " + mvlm_status_name(s) + ": " + mvlm_last_error());
}

// A JSON pointer token for `key` (RFC 6901 escapes).
inline std::string key(const std::string& k) {
  std::string out;
  for (char c : k) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out.push_back(c);
  }
  return out;
}

struct Array {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;

  size_t count() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }

  template <typename T>
  std::vector<T> as(const char* want) const {
    if (dtype != want) throw std::runtime_error("golden array is " + dtype + ", expected " + want);
    std::vector<T> out(count());
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  std::vector<float> floats() const { return as<float>("float32"); }
  std::vector<int64_t> ints() const { return as<int64_t>("int64"); }
  std::vector<uint8_t> bools() const { return as<uint8_t>("bool"); }
  std::vector<uint8_t> u8() const { return as<uint8_t>("uint8"); }
};

inline size_t itemsize(const std::string& dtype) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "int64" || dtype == "float64") return 8;
  if (dtype == "bool" || dtype == "uint8") return 1;
  throw std::runtime_error("unknown golden dtype " + dtype);
}

inline std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class Folder {
 public:
  explicit Folder(std::string dir) : dir_(std::move(dir)) {
    uint16_t probe = 1;
    unsigned char first;
    std::memcpy(&first, &probe, 1);
    if (first != 1) throw std::runtime_error("goldens are little-endian; this host is not");
    mvlm_json* j = nullptr;
    must(mvlm_json_load((dir_ + "/index.json").c_str(), &j), "loading " + dir_ + "/index.json");
    json_.reset(j);
  }

  const std::string& dir() const { return dir_; }
  const mvlm_json* json() const { return json_.get(); }

  bool has(const std::string& p) const {
    int32_t type;
    return mvlm_json_type(json(), p.c_str(), &type) == MVLM_OK;
  }
  double number(const std::string& p) const {
    double v;
    must(mvlm_json_number(json(), p.c_str(), &v), p);
    return v;
  }
  int64_t integer(const std::string& p) const { return static_cast<int64_t>(number(p)); }
  bool boolean(const std::string& p) const {
    int32_t v;
    must(mvlm_json_bool(json(), p.c_str(), &v), p);
    return v != 0;
  }
  size_t size(const std::string& p) const {
    size_t n;
    must(mvlm_json_size(json(), p.c_str(), &n), p);
    return n;
  }
  std::string string(const std::string& p) const {
    size_t n = 0;
    mvlm_json_string(json(), p.c_str(), nullptr, 0, &n);  // BUFFER_TOO_SMALL, reports n
    std::vector<char> buf(n + 1);
    must(mvlm_json_string(json(), p.c_str(), buf.data(), buf.size(), &n), p);
    return std::string(buf.data(), n);
  }
  std::string key_at(const std::string& p, size_t i) const {
    size_t n = 0;
    mvlm_json_key(json(), p.c_str(), i, nullptr, 0, &n);
    std::vector<char> buf(n + 1);
    must(mvlm_json_key(json(), p.c_str(), i, buf.data(), buf.size(), &n), p);
    return std::string(buf.data(), n);
  }
  std::vector<int64_t> ints(const std::string& p) const {
    std::vector<int64_t> out;
    for (size_t i = 0, n = size(p); i < n; ++i) out.push_back(integer(p + "/" + std::to_string(i)));
    return out;
  }
  std::vector<std::string> strings(const std::string& p) const {
    std::vector<std::string> out;
    for (size_t i = 0, n = size(p); i < n; ++i) out.push_back(string(p + "/" + std::to_string(i)));
    return out;
  }

  // The array an entry {"file", "dtype", "shape"} at `p` describes.
  Array array(const std::string& p) const {
    Array a;
    a.dtype = string(p + "/dtype");
    a.shape = ints(p + "/shape");
    const std::string file = string(p + "/file");
    const std::string data = read(dir_ + "/" + file);
    if (data.size() != a.count() * itemsize(a.dtype)) {
      throw std::runtime_error(file + " has " + std::to_string(data.size()) + " bytes, " + a.dtype + " of " +
                               std::to_string(a.count()) + " needs " + std::to_string(a.count() * itemsize(a.dtype)));
    }
    a.bytes.assign(data.begin(), data.end());
    return a;
  }

 private:
  struct Free {
    void operator()(mvlm_json* j) const { mvlm_json_free(j); }
  };
  std::string dir_;
  std::unique_ptr<mvlm_json, Free> json_;
};

// RAII holders for the core's handles.
struct TokenizerFree {
  void operator()(mvlm_tokenizer* t) const { mvlm_tokenizer_free(t); }
};
using TokenizerPtr = std::unique_ptr<mvlm_tokenizer, TokenizerFree>;
struct ManifestFree {
  void operator()(mvlm_manifest* m) const { mvlm_manifest_free(m); }
};
using ManifestPtr = std::unique_ptr<mvlm_manifest, ManifestFree>;

inline TokenizerPtr load_tokenizer(const std::string& path) {
  mvlm_tokenizer* t = nullptr;
  must(mvlm_tokenizer_load(path.c_str(), &t), "loading " + path);
  return TokenizerPtr(t);
}

inline ManifestPtr load_manifest(const std::string& path) {
  mvlm_manifest* m = nullptr;
  must(mvlm_manifest_load(path.c_str(), &m), "loading " + path);
  return ManifestPtr(m);
}

inline std::string detokenize(const mvlm_tokenizer* t, const std::vector<int64_t>& ids) {
  size_t n = 0;
  mvlm_detokenize(t, ids.data(), ids.size(), nullptr, 0, &n);
  std::vector<char> buf(n + 1);
  must(mvlm_detokenize(t, ids.data(), ids.size(), buf.data(), buf.size(), &n), "detokenize");
  return std::string(buf.data(), n);
}

}  // namespace golden
