// C API: tokenizer and JSON handles.
#include <cstring>
#include <memory>

#include "common.hpp"
#include "handles.hpp"
#include "json.hpp"
#include "tokenizer.hpp"


using minivlm::fail;
using minivlm::guard;
using minivlm::require;
using minivlm::str;

namespace {

const minivlm::json::Value& at(const mvlm_json* json, const char* pointer) {
  require(json, "json");
  require(pointer, "pointer");
  std::string error;
  const minivlm::json::Value* v = minivlm::json::resolve(json->root, pointer, &error);
  if (!v) fail(MVLM_INVALID_ARGUMENT, error);
  return *v;
}

const minivlm::json::Value& typed(const mvlm_json* json, const char* pointer, minivlm::json::Value::Type type) {
  const minivlm::json::Value& v = at(json, pointer);
  if (v.type != type) {
    fail(MVLM_INVALID_ARGUMENT, std::string("JSON value at '") + pointer + "' is " + minivlm::json::type_name(v.type) +
                                    ", expected " + minivlm::json::type_name(type));
  }
  return v;
}

}  // namespace

extern "C" {

mvlm_status mvlm_tokenizer_parse(const char* vocab_text, size_t length, mvlm_tokenizer** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    if (length > 0) require(vocab_text, "vocab_text");
    auto t = std::make_unique<mvlm_tokenizer>(
        mvlm_tokenizer{minivlm::Tokenizer::parse(std::string_view(length ? vocab_text : "", length), "(memory)")});
    *out = t.release();
  });
}

mvlm_status mvlm_tokenizer_load(const char* vocab_path, mvlm_tokenizer** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(vocab_path, "vocab_path");
    const std::string text = minivlm::read_file(vocab_path, "vocab file");
    auto t = std::make_unique<mvlm_tokenizer>(mvlm_tokenizer{minivlm::Tokenizer::parse(text, vocab_path)});
    *out = t.release();
  });
}

void mvlm_tokenizer_free(mvlm_tokenizer* tokenizer) { delete tokenizer; }

mvlm_status mvlm_tokenizer_vocab_size(const mvlm_tokenizer* tokenizer, int32_t* size) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(size, "size");
    *size = tokenizer->tokenizer.vocab_size();
  });
}

mvlm_status mvlm_tokenizer_special_ids(const mvlm_tokenizer* tokenizer, int64_t ids[5]) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(ids, "ids");
    const minivlm::Tokenizer& t = tokenizer->tokenizer;
    const int64_t values[5] = {t.pad_id(), t.unk_id(), t.cls_id(), t.sep_id(), t.mask_id()};
    std::memcpy(ids, values, sizeof(values));
  });
}

mvlm_status mvlm_tokenize(const mvlm_tokenizer* tokenizer, const char* text, size_t length, int64_t* ids,
                          size_t capacity, size_t* count) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(count, "count");
    *count = 0;
    if (length > 0) require(text, "text");
    const std::vector<int64_t> out = tokenizer->tokenizer.encode(std::string_view(length ? text : "", length));
    *count = out.size();
    if (capacity < out.size()) {
      fail(MVLM_BUFFER_TOO_SMALL, "ids holds " + str(capacity) + " ids, " + str(out.size()) + " needed");
    }
    if (!out.empty()) {
      require(ids, "ids");
      std::memcpy(ids, out.data(), out.size() * sizeof(int64_t));
    }
  });
}

mvlm_status mvlm_detokenize(const mvlm_tokenizer* tokenizer, const int64_t* ids, size_t count, char* buffer,
                            size_t capacity, size_t* length) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(length, "length");
    *length = 0;
    if (count > 0) require(ids, "ids");
    minivlm::copy_out(tokenizer->tokenizer.decode(ids, count), buffer, capacity, length);
  });
}

mvlm_status mvlm_token_text(const mvlm_tokenizer* tokenizer, int64_t id, char* buffer, size_t capacity,
                            size_t* length) {
  return guard([&] {
    require(tokenizer, "tokenizer");
    require(length, "length");
    *length = 0;
    minivlm::copy_out(tokenizer->tokenizer.token(id), buffer, capacity, length);
  });
}

mvlm_status mvlm_json_parse(const char* text, size_t length, mvlm_json** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    if (length > 0) require(text, "text");
    auto j = std::make_unique<mvlm_json>(mvlm_json{minivlm::json::parse(std::string_view(length ? text : "", length), "JSON text")});
    *out = j.release();
  });
}

mvlm_status mvlm_json_load(const char* path, mvlm_json** out) {
  return guard([&] {
    require(out, "out");
    *out = nullptr;
    require(path, "path");
    const std::string text = minivlm::read_file(path, "JSON file");
    auto j = std::make_unique<mvlm_json>(mvlm_json{minivlm::json::parse(text, path)});
    *out = j.release();
  });
}

void mvlm_json_free(mvlm_json* json) { delete json; }

mvlm_status mvlm_json_type(const mvlm_json* json, const char* pointer, int32_t* type) {
  return guard([&] {
    require(type, "type");
    *type = static_cast<int32_t>(at(json, pointer).type);
  });
}

mvlm_status mvlm_json_size(const mvlm_json* json, const char* pointer, size_t* size) {
  return guard([&] {
    require(size, "size");
    const minivlm::json::Value& v = at(json, pointer);
    if (v.type == minivlm::json::Value::Type::Array) {
      *size = v.items.size();
    } else if (v.type == minivlm::json::Value::Type::Object) {
      *size = v.members.size();
    } else {
      fail(MVLM_INVALID_ARGUMENT, std::string("JSON value at '") + pointer + "' is " +
                                      minivlm::json::type_name(v.type) + ", expected an array or an object");
    }
  });
}

mvlm_status mvlm_json_number(const mvlm_json* json, const char* pointer, double* value) {
  return guard([&] {
    require(value, "value");
    *value = typed(json, pointer, minivlm::json::Value::Type::Number).number;
  });
}

mvlm_status mvlm_json_bool(const mvlm_json* json, const char* pointer, int32_t* value) {
  return guard([&] {
    require(value, "value");
    *value = typed(json, pointer, minivlm::json::Value::Type::Bool).boolean ? 1 : 0;
  });
}

mvlm_status mvlm_json_string(const mvlm_json* json, const char* pointer, char* buffer, size_t capacity,
                             size_t* length) {
  return guard([&] {
    require(length, "length");
    *length = 0;
    minivlm::copy_out(typed(json, pointer, minivlm::json::Value::Type::String).string, buffer, capacity, length);
  });
}

mvlm_status mvlm_json_key(const mvlm_json* json, const char* pointer, size_t index, char* buffer, size_t capacity,
                          size_t* length) {
  return guard([&] {
    require(length, "length");
    *length = 0;
    const minivlm::json::Value& v = typed(json, pointer, minivlm::json::Value::Type::Object);
    if (index >= v.members.size()) {
      fail(MVLM_INVALID_ARGUMENT, "index " + str(index) + " is past the " + str(v.members.size()) + " members of '" +
                                      pointer + "'");
    }
    minivlm::copy_out(v.members[index].key, buffer, capacity, length);
  });
}

}  // extern "C"
