// What the C API's opaque handles hold.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "json.hpp"
#include "minivlm/minivlm.h"
#include "tokenizer.hpp"

struct mvlm_tokenizer {
  minivlm::Tokenizer tokenizer;
};

struct mvlm_json {
  minivlm::json::Value root;
};

struct mvlm_manifest {
  mvlm_json json;
  std::string folder;  // "" when parsed from memory without a folder
  mvlm_config config;
  // False for a build of another model family (mvlm_build_manifest_load): `config` is unset, `family` names it.
  bool has_config = true;
  std::string family = "minivlm";
  // Class names, read from the vocabularies file on first use.
  mutable std::once_flag classes_once;
  mutable std::vector<std::string> classes;
  mutable std::string classes_error;
  mutable mvlm_status classes_status = MVLM_OK;
};
