// The whole caption decode (greedy and beam search) of every golden image, through mvlm_caption_decode with a
// callback that replays python_ref's caption_step results:
// - rows are looked up by each beam's token history (index.json "caption_decoding": top-k logits, indices and
//   the logsumexp of the others, from which a full row is rebuilt exactly as converters/caption_goldens.py does);
// - where the goldens hold the real caption_step calls (a build's golden/), their inputs must be reproduced
//   exactly and their real outputs are returned;
// - every call also checks what the core hands the graph: history, token and position ids, the prefix K/V and
//   mask of every beam, and the K/V cache (the returned new keys, in their slots, reordered with the beams).
// The core must reproduce the reference's tokens, caption text, finished flag and score.
// Usage: test_caption GOLDEN_DIR MANIFEST_JSON VOCAB_TXT
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

#include "check.hpp"
#include "golden.hpp"

namespace {

struct Table {
  std::map<std::vector<int64_t>, size_t> rows;
  std::vector<int64_t> top_indices;
  std::vector<float> top_logits, rest_logsumexp;
  size_t k = 0;
};

Table load_table(const golden::Folder& g, const std::string& p) {
  Table t;
  const golden::Array histories = g.array(p + "/histories");
  const std::vector<int64_t> h = histories.ints();
  const size_t m = static_cast<size_t>(histories.shape[0]), width = static_cast<size_t>(histories.shape[1]);
  for (size_t i = 0; i < m; ++i) {
    std::vector<int64_t> row;
    for (size_t j = 0; j < width && h[i * width + j] >= 0; ++j) row.push_back(h[i * width + j]);
    t.rows[row] = i;
  }
  const golden::Array indices = g.array(p + "/top_indices");
  t.k = static_cast<size_t>(indices.shape[1]);
  t.top_indices = indices.ints();
  t.top_logits = g.array(p + "/top_logits").floats();
  t.rest_logsumexp = g.array(p + "/rest_logsumexp").floats();
  return t;
}

struct RealCall {  // one recorded caption_step call (a build's golden/)
  std::vector<int64_t> token_ids, position_ids;
  std::vector<float> prefix_keys, prefix_values, prefix_mask, cache_keys, cache_values, cache_mask;
  std::vector<float> mask_logits, new_keys, new_values;
};

struct Replay {
  const mvlm_config* c = nullptr;
  const Table* table = nullptr;
  const std::vector<RealCall>* real = nullptr;  // used for the first calls, greedy only
  const float* prefix_keys = nullptr;
  const float* prefix_values = nullptr;
  std::vector<float> prefix_mask;  // (P,)
  std::map<std::vector<int64_t>, std::vector<float>> keys, values;  // what was returned for each history
  int32_t calls = 0;
  std::string problem;  // the first inconsistency seen

  void note(const std::string& what) {
    if (problem.empty()) problem = "step " + std::to_string(calls) + ": " + what;
  }
};

// A value unique to (history, position in the (L, Hd, d) block): what the fake graph returns as new K/V.
float fingerprint(const std::vector<int64_t>& history, size_t element, bool value) {
  uint32_t h = 2166136261u;
  for (int64_t t : history) h = (h ^ static_cast<uint32_t>(t)) * 16777619u;
  h = (h ^ static_cast<uint32_t>(element)) * 16777619u;
  const float f = static_cast<float>(h % (1u << 22));
  return value ? -f - 0.5f : f;
}

// A full logits row from a table row (as converters/caption_goldens.py `reconstruct_logits`).
void rebuild(const Table& t, size_t m, size_t vocab, float* row) {
  float lowest = std::numeric_limits<float>::infinity();
  for (size_t j = 0; j < t.k; ++j) lowest = std::min(lowest, t.top_logits[m * t.k + j]);
  float filler = static_cast<float>(static_cast<double>(t.rest_logsumexp[m]) - std::log(static_cast<double>(vocab - t.k)));
  filler = std::min(filler, std::nextafter(lowest, -std::numeric_limits<float>::infinity()));
  std::fill(row, row + vocab, filler);
  for (size_t j = 0; j < t.k; ++j) row[t.top_indices[m * t.k + j]] = t.top_logits[m * t.k + j];
}

int32_t replay_step(void* user, const mvlm_step_request* r) {
  Replay& rp = *static_cast<Replay*>(user);
  const mvlm_config& c = *rp.c;
  ++rp.calls;
  const size_t n = static_cast<size_t>(r->num_beams), t = static_cast<size_t>(r->step);
  const size_t layers = static_cast<size_t>(c.num_layers), heads = static_cast<size_t>(c.num_heads);
  const size_t d = static_cast<size_t>(c.head_dim), cl = static_cast<size_t>(c.max_text_len);
  const size_t p = static_cast<size_t>(c.max_tags_len + c.max_regions), vocab = static_cast<size_t>(c.vocab_size);
  const size_t block = layers * heads * d;  // one row's new K (or V)
  if (t != static_cast<size_t>(rp.calls)) rp.note("step " + std::to_string(t) + " on call " + std::to_string(rp.calls));
  const size_t real_index = static_cast<size_t>(rp.calls - 1);
  const bool real = rp.real && real_index < rp.real->size() && n == 1;
  for (size_t i = 0; i < n; ++i) {
    const std::vector<int64_t> history(r->history + i * t, r->history + (i + 1) * t);
    if (history[0] != c.cls_id) rp.note("history does not start with [CLS]");
    if (r->token_ids[2 * i] != history[t - 1] || r->token_ids[2 * i + 1] != c.mask_id) rp.note("token_ids are not [last, [MASK]]");
    if (r->position_ids[2 * i] != static_cast<int64_t>(t - 1) || r->position_ids[2 * i + 1] != static_cast<int64_t>(t)) {
      rp.note("position_ids are not [t-1, t]");
    }
    for (size_t l = 0; l < layers; ++l) {
      const size_t per = heads * p * d;
      if (std::memcmp(r->prefix_keys + (l * n + i) * per, rp.prefix_keys + l * per, per * sizeof(float)) ||
          std::memcmp(r->prefix_values + (l * n + i) * per, rp.prefix_values + l * per, per * sizeof(float))) {
        rp.note("beam " + std::to_string(i) + " does not see the image's prefix K/V in layer " + std::to_string(l));
      }
    }
    if (std::memcmp(r->prefix_mask + i * p, rp.prefix_mask.data(), p * sizeof(float))) rp.note("prefix_mask is not tag_mask + region_mask");
    for (size_t j = 0; j < cl; ++j) {
      const float want_mask = j + 1 < t ? 1.0f : 0.0f;
      if (r->cache_mask[i * cl + j] != want_mask) rp.note("cache_mask slot " + std::to_string(j));
      const std::vector<int64_t> prefix(history.begin(), history.begin() + static_cast<std::ptrdiff_t>(std::min(j + 1, t)));
      const auto k_it = rp.keys.find(prefix), v_it = rp.values.find(prefix);
      for (size_t l = 0; l < layers; ++l) {
        for (size_t h = 0; h < heads; ++h) {
          const float* got_k = r->cache_keys + (((l * n + i) * heads + h) * cl + j) * d;
          const float* got_v = r->cache_values + (((l * n + i) * heads + h) * cl + j) * d;
          for (size_t e = 0; e < d; ++e) {
            float want_k = 0.0f, want_v = 0.0f;
            if (j + 1 < t) {
              if (k_it == rp.keys.end() || v_it == rp.values.end()) {
                rp.note("cache slot " + std::to_string(j) + " of a history never returned");
                continue;
              }
              want_k = k_it->second[(l * heads + h) * d + e];
              want_v = v_it->second[(l * heads + h) * d + e];
            }
            if (got_k[e] != want_k || got_v[e] != want_v) {
              rp.note("cache slot " + std::to_string(j) + " of beam " + std::to_string(i) + " holds the wrong K/V");
              l = layers, h = heads;
              break;
            }
          }
        }
      }
    }
    // Outputs: real ones where recorded, else a rebuilt row and fingerprint K/V.
    std::vector<float> k_row(block), v_row(block);
    if (real) {
      const RealCall& call = (*rp.real)[real_index];
      std::memcpy(r->mask_logits, call.mask_logits.data(), vocab * sizeof(float));
      k_row = call.new_keys;  // (L, 1, Hd, 1, d) is (L, Hd, d)
      v_row = call.new_values;
    } else {
      const auto it = rp.table->rows.find(history);
      if (it == rp.table->rows.end()) {
        rp.note("the core asked for a history python_ref never decoded");
        return 3;
      }
      rebuild(*rp.table, it->second, vocab, r->mask_logits + i * vocab);
      for (size_t e = 0; e < block; ++e) {
        k_row[e] = fingerprint(history, e, false);
        v_row[e] = fingerprint(history, e, true);
      }
    }
    for (size_t l = 0; l < layers; ++l) {
      for (size_t h = 0; h < heads; ++h) {
        std::memcpy(r->new_keys + ((l * n + i) * heads + h) * d, &k_row[(l * heads + h) * d], d * sizeof(float));
        std::memcpy(r->new_values + ((l * n + i) * heads + h) * d, &v_row[(l * heads + h) * d], d * sizeof(float));
      }
    }
    rp.keys[history] = k_row;
    rp.values[history] = v_row;
  }
  if (real) {  // the recorded inputs of this call, exactly
    const RealCall& call = (*rp.real)[real_index];
    const size_t cache = layers * heads * cl * d, pre = layers * heads * p * d;
    const bool same = std::equal(call.token_ids.begin(), call.token_ids.end(), r->token_ids) &&
                      std::equal(call.position_ids.begin(), call.position_ids.end(), r->position_ids) &&
                      !std::memcmp(call.prefix_keys.data(), r->prefix_keys, pre * sizeof(float)) &&
                      !std::memcmp(call.prefix_values.data(), r->prefix_values, pre * sizeof(float)) &&
                      !std::memcmp(call.prefix_mask.data(), r->prefix_mask, p * sizeof(float)) &&
                      !std::memcmp(call.cache_keys.data(), r->cache_keys, cache * sizeof(float)) &&
                      !std::memcmp(call.cache_values.data(), r->cache_values, cache * sizeof(float)) &&
                      !std::memcmp(call.cache_mask.data(), r->cache_mask, cl * sizeof(float));
    if (!same) rp.note("the inputs differ from the recorded caption_step call " + std::to_string(real_index));
  }
  return 0;
}

std::vector<RealCall> real_calls(const golden::Folder& g, const std::string& base) {
  std::vector<RealCall> out;
  const std::string calls = base + "/graphs/caption_step";
  if (!g.has(calls)) return out;
  for (size_t i = 0, n = g.size(calls); i < n; ++i) {
    const std::string in = calls + "/" + std::to_string(i) + "/inputs", o = calls + "/" + std::to_string(i) + "/outputs";
    RealCall c;
    c.token_ids = g.array(in + "/token_ids").ints();
    c.position_ids = g.array(in + "/position_ids").ints();
    c.prefix_keys = g.array(in + "/prefix_keys").floats();
    c.prefix_values = g.array(in + "/prefix_values").floats();
    c.prefix_mask = g.array(in + "/prefix_mask").floats();
    c.cache_keys = g.array(in + "/cache_keys").floats();
    c.cache_values = g.array(in + "/cache_values").floats();
    c.cache_mask = g.array(in + "/cache_mask").floats();
    c.mask_logits = g.array(o + "/mask_logits").floats();
    c.new_keys = g.array(o + "/new_keys").floats();
    c.new_values = g.array(o + "/new_values").floats();
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s GOLDEN_DIR MANIFEST_JSON VOCAB_TXT\n", argv[0]);
    return 2;
  }
  check::Suite suite("caption decoding");
  return suite.run([&](check::Suite& s) {
    const golden::Folder g(argv[1]);
    const golden::ManifestPtr manifest = golden::load_manifest(argv[2]);
    const golden::TokenizerPtr tok = golden::load_tokenizer(argv[3]);
    mvlm_config c{};
    golden::must(mvlm_manifest_config(manifest.get(), &c), "manifest config");
    s.ok(g.integer("/version") >= 2, "index.json version " + std::to_string(g.integer("/version")) +
                                         " (version 1 predates caption_decoding: rebuild with the current converter)");
    const size_t p = static_cast<size_t>(c.max_tags_len + c.max_regions);
    const size_t prefix_size = static_cast<size_t>(c.num_layers * c.num_heads * c.head_dim) * p;
    int beams_checked = 0;
    for (size_t ci = 0, nc = g.size("/cases"); ci < nc; ++ci) {
      const std::string name = g.key_at("/cases", ci);
      const std::string base = "/cases/" + golden::key(name);
      const std::string packing = base + "/host_steps/caption_packing/outputs";
      std::vector<int64_t> ids = g.array(packing + "/input_ids").ints(), types = g.array(packing + "/token_type_ids").ints();
      std::vector<float> mask = g.array(packing + "/token_mask").floats(), regions = g.array(packing + "/regions").floats();
      std::vector<float> region_mask = g.array(packing + "/region_mask").floats();
      const mvlm_fusion_inputs inputs{ids.data(), types.data(), mask.data(), regions.data(), region_mask.data()};
      // The image's prefix K/V: caption_prefix's real outputs when recorded, else a recognisable pattern.
      std::vector<float> prefix_keys(prefix_size), prefix_values(prefix_size);
      const std::string prefix_call = base + "/graphs/caption_prefix/0/outputs";
      if (g.has(prefix_call)) {
        prefix_keys = g.array(prefix_call + "/prefix_keys").floats();
        prefix_values = g.array(prefix_call + "/prefix_values").floats();
      } else {
        for (size_t i = 0; i < prefix_size; ++i) {
          prefix_keys[i] = static_cast<float>(i % 997) * 0.25f;
          prefix_values[i] = -static_cast<float>(i % 991) * 0.5f;
        }
      }
      const std::vector<RealCall> real = real_calls(g, base);
      for (const char* kind : {"greedy", "beam"}) {
        const std::string dp = base + "/caption_decoding/" + kind;
        if (!g.has(dp)) {
          s.ok(std::string(kind) == "beam", name + ": goldens hold the " + kind + " decode");
          continue;
        }
        const std::string label = name + " " + kind;
        const Table table = load_table(g, dp + "/table");
        s.ok(table.k == static_cast<size_t>(g.integer(base + "/caption_decoding/top_k")), label + ": top_k");
        Replay rp;
        rp.c = &c;
        rp.table = &table;
        rp.real = std::string(kind) == "greedy" ? &real : nullptr;
        rp.prefix_keys = prefix_keys.data();
        rp.prefix_values = prefix_values.data();
        rp.prefix_mask.assign(mask.begin() + c.max_text_len, mask.end());
        rp.prefix_mask.insert(rp.prefix_mask.end(), region_mask.begin(), region_mask.end());
        mvlm_caption_options options{static_cast<int32_t>(g.integer(dp + "/num_beams")), g.number(dp + "/length_penalty"),
                                     static_cast<int32_t>(g.integer(dp + "/max_caption_tokens"))};
        mvlm_caption caption{};
        s.status(mvlm_caption_decode(&c, &inputs, prefix_keys.data(), prefix_values.data(), &options, replay_step, &rp, &caption),
                 label + ": caption_decode");
        s.ok(rp.problem.empty(), label + ": what the core handed the step graph: " + (rp.problem.empty() ? "consistent" : rp.problem));
        s.ok(rp.calls == static_cast<int32_t>(g.integer(dp + "/steps")),
             label + ": " + std::to_string(rp.calls) + " caption_step calls, python_ref made " + std::to_string(g.integer(dp + "/steps")));
        const std::vector<int64_t> got(caption.token_ids, caption.token_ids + caption.num_tokens);
        s.equal(got, g.ints(dp + "/token_ids"), label + ": tokens");
        s.ok((caption.finished != 0) == g.boolean(dp + "/finished"), label + ": finished flag");
        std::printf("%s: %d tokens in %d calls, score %.7f (python_ref %.7f)\n", label.c_str(), caption.num_tokens, rp.calls,
                    caption.score, g.number(dp + "/score"));
        s.ok(std::fabs(caption.score - g.number(dp + "/score")) <= check::kScoreTol,
             label + ": score " + std::to_string(caption.score) + ", python_ref " + std::to_string(g.number(dp + "/score")));
        const std::string text = golden::detokenize(tok.get(), got);
        s.ok(text == g.string(dp + "/caption"), label + ": caption '" + text + "', python_ref '" + g.string(dp + "/caption") + "'");
        if (std::string(kind) == "greedy") {  // the pipeline's own caption
          const std::string out = base + "/host_steps/greedy_caption/outputs";
          s.equal(got, g.array(out + "/token_ids").ints(), label + ": the pipeline's caption tokens");
          s.ok(text == g.string(out + "/caption/value"), label + ": the pipeline's caption '" + g.string(out + "/caption/value") + "'");
          s.ok((caption.finished != 0) == g.boolean(out + "/finished/value"), label + ": the pipeline's finished flag");
          if (!real.empty()) s.ok(rp.calls >= static_cast<int32_t>(real.size()), label + ": replayed the recorded caption_step calls");
        } else {
          ++beams_checked;
        }
      }
    }
    std::printf("beam-search decodes checked: %d\n", beams_checked);
  });
}
