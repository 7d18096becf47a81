// Caption decoding, python_ref/generate.py: greedy and beam search over the cached caption_step graph
// (OSCAR: start from [CLS], append [MASK] and predict it, stop at [SEP]). The host keeps the caption K/V cache
// exactly as `CachedDecoder` does: the K/V of the token at t-1 join cache slot t-1 after step t; beams reorder it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "boxes.hpp"
#include "common.hpp"

using minivlm::fail;
using minivlm::require;
using minivlm::str;

namespace {

class CachedDecoder {
 public:
  CachedDecoder(const mvlm_config& c, const mvlm_fusion_inputs& inputs, const float* prefix_keys,
                const float* prefix_values, int32_t num_beams, mvlm_step_fn fn, void* user)
      : c_(c), n_(static_cast<size_t>(num_beams)), fn_(fn), user_(user) {
    layers_ = static_cast<size_t>(c.num_layers);
    heads_ = static_cast<size_t>(c.num_heads);
    d_ = static_cast<size_t>(c.head_dim);
    p_ = static_cast<size_t>(c.max_tags_len + c.max_regions);
    cache_len_ = static_cast<size_t>(c.max_text_len);
    vocab_ = static_cast<size_t>(c.vocab_size);
    // (L, 1, Hd, P, d) -> (L, N, Hd, P, d): every beam sees the same prefix.
    const size_t per_beam = heads_ * p_ * d_;
    prefix_keys_.resize(layers_ * n_ * per_beam);
    prefix_values_.resize(prefix_keys_.size());
    for (size_t l = 0; l < layers_; ++l) {
      for (size_t b = 0; b < n_; ++b) {
        std::memcpy(&prefix_keys_[(l * n_ + b) * per_beam], prefix_keys + l * per_beam, per_beam * sizeof(float));
        std::memcpy(&prefix_values_[(l * n_ + b) * per_beam], prefix_values + l * per_beam, per_beam * sizeof(float));
      }
    }
    // prefix_mask = tag_mask ⊕ region_mask, per beam.
    const size_t tags = static_cast<size_t>(c.max_tags_len), regions = static_cast<size_t>(c.max_regions);
    prefix_mask_.resize(n_ * p_);
    for (size_t b = 0; b < n_; ++b) {
      std::memcpy(&prefix_mask_[b * p_], inputs.token_mask + cache_len_, tags * sizeof(float));
      std::memcpy(&prefix_mask_[b * p_ + tags], inputs.region_mask, regions * sizeof(float));
    }
    cache_keys_.assign(layers_ * n_ * heads_ * cache_len_ * d_, 0.0f);
    cache_values_.assign(cache_keys_.size(), 0.0f);
    cache_mask_.assign(n_ * cache_len_, 0.0f);
    logits_.resize(n_ * vocab_);
    new_keys_.resize(layers_ * n_ * heads_ * d_);
    new_values_.resize(new_keys_.size());
  }

  // Logits (N, V) of the [MASK] after `history` (N, t), tokens at positions 0..t-1.
  const std::vector<float>& step(const std::vector<int64_t>& history, size_t t) {
    std::vector<int64_t> token_ids(2 * n_), position_ids(2 * n_);
    for (size_t b = 0; b < n_; ++b) {
      token_ids[2 * b] = history[b * t + t - 1];
      token_ids[2 * b + 1] = c_.mask_id;
      position_ids[2 * b] = static_cast<int64_t>(t - 1);
      position_ids[2 * b + 1] = static_cast<int64_t>(t);
    }
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    std::fill(new_keys_.begin(), new_keys_.end(), 0.0f);
    std::fill(new_values_.begin(), new_values_.end(), 0.0f);
    const mvlm_step_request request = {
        static_cast<int32_t>(t), static_cast<int32_t>(n_), history.data(), token_ids.data(), position_ids.data(),
        prefix_keys_.data(), prefix_values_.data(), prefix_mask_.data(), cache_keys_.data(), cache_values_.data(),
        cache_mask_.data(), logits_.data(), new_keys_.data(), new_values_.data()};
    const int32_t rc = fn_(user_, &request);
    if (rc != 0) fail(MVLM_CALLBACK_FAILED, "the caption step callback returned " + str(rc) + " at step " + str(t));
    // The token at t-1 is final now: its K/V join the cache (the [MASK]'s never do).
    for (size_t l = 0; l < layers_; ++l) {
      for (size_t b = 0; b < n_; ++b) {
        for (size_t h = 0; h < heads_; ++h) {
          const size_t src = ((l * n_ + b) * heads_ + h) * d_;
          const size_t dst = (((l * n_ + b) * heads_ + h) * cache_len_ + (t - 1)) * d_;
          std::memcpy(&cache_keys_[dst], &new_keys_[src], d_ * sizeof(float));
          std::memcpy(&cache_values_[dst], &new_values_[src], d_ * sizeof(float));
        }
      }
    }
    for (size_t b = 0; b < n_; ++b) cache_mask_[b * cache_len_ + t - 1] = 1.0f;
    return logits_;
  }

  // Beam i continues from beam `parents[i]`.
  void reorder(const std::vector<size_t>& parents) {
    const size_t per_beam = heads_ * cache_len_ * d_;
    std::vector<float> keys(cache_keys_.size()), values(cache_values_.size()), mask(cache_mask_.size());
    for (size_t l = 0; l < layers_; ++l) {
      for (size_t b = 0; b < n_; ++b) {
        std::memcpy(&keys[(l * n_ + b) * per_beam], &cache_keys_[(l * n_ + parents[b]) * per_beam], per_beam * sizeof(float));
        std::memcpy(&values[(l * n_ + b) * per_beam], &cache_values_[(l * n_ + parents[b]) * per_beam], per_beam * sizeof(float));
      }
    }
    for (size_t b = 0; b < n_; ++b) {
      std::memcpy(&mask[b * cache_len_], &cache_mask_[parents[b] * cache_len_], cache_len_ * sizeof(float));
    }
    cache_keys_.swap(keys);
    cache_values_.swap(values);
    cache_mask_.swap(mask);
  }

 private:
  const mvlm_config& c_;
  size_t n_, layers_ = 0, heads_ = 0, d_ = 0, p_ = 0, cache_len_ = 0, vocab_ = 0;
  mvlm_step_fn fn_;
  void* user_;
  std::vector<float> prefix_keys_, prefix_values_, prefix_mask_, cache_keys_, cache_values_, cache_mask_;
  std::vector<float> logits_, new_keys_, new_values_;
};

// F.log_softmax of one row in float32, in torch's order: (x - max) - log(sum exp(x - max)).
void log_softmax(const float* x, size_t n, std::vector<float>& out) {
  out.resize(n);
  float max = x[0];
  for (size_t i = 1; i < n; ++i) max = std::isnan(x[i]) || x[i] > max ? x[i] : max;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - max));
  const float log_sum = static_cast<float>(std::log(sum));
  for (size_t i = 0; i < n; ++i) out[i] = (x[i] - max) - log_sum;
}

// torch.argmax: the first maximal value (NaN counts as maximal).
size_t argmax(const float* x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (minivlm::greater(x[i], x[best])) best = i;
  }
  return best;
}

struct Hypothesis {
  std::vector<int64_t> tokens;
  double score;
  bool finished;
};

// OSCAR/HF `BeamHypotheses`: the best `size` hypotheses, by length-normalised log-probability.
struct Hypotheses {
  size_t size;
  double length_penalty;
  std::vector<Hypothesis> items;

  void add(std::vector<int64_t> tokens, size_t steps, double sum_logprobs, bool finished) {
    items.push_back({std::move(tokens), sum_logprobs / std::pow(static_cast<double>(steps), length_penalty), finished});
    // Python's list.sort(reverse=True) is stable: equal scores keep their insertion order.
    std::stable_sort(items.begin(), items.end(), [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
    if (items.size() > size) items.resize(size);
  }

  bool done(double best_running_sum, size_t length) const {
    return items.size() >= size &&
           items.back().score >= best_running_sum / std::pow(static_cast<double>(length), length_penalty);
  }
};

void greedy(CachedDecoder& decoder, const mvlm_config& c, size_t steps, mvlm_caption& out) {
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  std::vector<int64_t> history = {c.cls_id};
  std::vector<float> logp;
  double score = 0.0;
  bool finished = false;
  for (size_t t = 1; t <= steps; ++t) {
    const std::vector<float>& logits = decoder.step(history, history.size());
    const size_t token = argmax(logits.data(), vocab);
    log_softmax(logits.data(), vocab, logp);
    score += static_cast<double>(logp[token]);
    if (static_cast<int64_t>(token) == c.sep_id) {
      finished = true;
      break;
    }
    history.push_back(static_cast<int64_t>(token));
  }
  out.num_tokens = static_cast<int32_t>(history.size() - 1);
  std::copy(history.begin() + 1, history.end(), out.token_ids);
  out.score = score;
  out.finished = finished ? 1 : 0;
}

struct Candidate {
  float score;
  size_t index;  // beam * V + word
};

void beam_search(CachedDecoder& decoder, const mvlm_config& c, size_t steps, size_t num_beams, double length_penalty,
                 mvlm_caption& out) {
  const size_t vocab = static_cast<size_t>(c.vocab_size), k = 2 * num_beams;
  std::vector<std::vector<int64_t>> beams(num_beams, std::vector<int64_t>{c.cls_id});
  std::vector<float> beam_scores(num_beams, -1e9f);
  beam_scores[0] = 0.0f;  // all beams start identical: only the first one expands at step 1
  Hypotheses hyps{num_beams, length_penalty, {}};
  std::vector<float> logp;
  // Top-k by score, ties by the lower flat index (torch.topk over (N * V)).
  auto better = [](const Candidate& a, const Candidate& b) {
    if (minivlm::greater(a.score, b.score)) return true;
    if (minivlm::greater(b.score, a.score)) return false;
    return a.index < b.index;
  };
  for (size_t t = 1; t <= steps; ++t) {
    std::vector<int64_t> history;
    for (const auto& b : beams) history.insert(history.end(), b.begin(), b.end());
    const std::vector<float>& logits = decoder.step(history, t);
    std::vector<Candidate> top;  // a heap whose front is the worst kept candidate
    for (size_t b = 0; b < num_beams; ++b) {
      log_softmax(logits.data() + b * vocab, vocab, logp);
      for (size_t w = 0; w < vocab; ++w) {
        const Candidate cand{logp[w] + beam_scores[b], b * vocab + w};
        if (top.size() < k) {
          top.push_back(cand);
          std::push_heap(top.begin(), top.end(), better);
        } else if (better(cand, top.front())) {
          std::pop_heap(top.begin(), top.end(), better);
          top.back() = cand;
          std::push_heap(top.begin(), top.end(), better);
        }
      }
    }
    std::sort(top.begin(), top.end(), better);
    struct Running {
      float score;
      size_t beam;
      int64_t word;
    };
    std::vector<Running> running;
    for (const Candidate& cand : top) {
      const size_t beam = cand.index / vocab;
      const int64_t word = static_cast<int64_t>(cand.index % vocab);
      if (word == c.sep_id || t == steps) {
        std::vector<int64_t> tokens(beams[beam].begin() + 1, beams[beam].end());
        if (word != c.sep_id) tokens.push_back(word);
        hyps.add(std::move(tokens), t, static_cast<double>(cand.score), word == c.sep_id);
      } else if (running.size() < num_beams) {
        running.push_back({cand.score, beam, word});
      }
    }
    if (t == steps) break;
    if (running.empty()) fail(MVLM_INTERNAL, "beam search has no running beam at step " + str(t));
    if (hyps.done(static_cast<double>(running[0].score), t)) break;
    std::vector<size_t> parents;
    std::vector<std::vector<int64_t>> next;
    for (size_t i = 0; i < running.size(); ++i) {
      parents.push_back(running[i].beam);
      next.push_back(beams[running[i].beam]);
      next.back().push_back(running[i].word);
      beam_scores[i] = running[i].score;
    }
    decoder.reorder(parents);
    beams.swap(next);
  }
  const Hypothesis& best = hyps.items.front();
  out.num_tokens = static_cast<int32_t>(best.tokens.size());
  std::copy(best.tokens.begin(), best.tokens.end(), out.token_ids);
  out.score = best.score;
  out.finished = best.finished ? 1 : 0;
}

}  // namespace

extern "C" {

mvlm_status mvlm_caption_decode(const mvlm_config* config, const mvlm_fusion_inputs* inputs,
                                const float* prefix_keys, const float* prefix_values,
                                const mvlm_caption_options* options, mvlm_step_fn step, void* user_data,
                                mvlm_caption* caption) {
  return minivlm::guard([&] {
    const mvlm_config& c = minivlm::checked(config);
    require(inputs, "inputs");
    require(inputs->token_mask, "inputs->token_mask");
    require(inputs->region_mask, "inputs->region_mask");
    require(prefix_keys, "prefix_keys");
    require(prefix_values, "prefix_values");
    require(options, "options");
    require(caption, "caption");
    if (step == nullptr) fail(MVLM_INVALID_ARGUMENT, "step is NULL");
    caption->num_tokens = 0;
    caption->score = 0.0;
    caption->finished = 0;
    const int32_t steps = options->max_caption_tokens == 0 ? c.max_caption_tokens : options->max_caption_tokens;
    if (steps < 1 || steps > c.max_text_len - 2 || steps > MVLM_MAX_CAPTION_TOKENS) {
      fail(MVLM_INVALID_ARGUMENT, "max_caption_tokens is " + str(steps) + ", it must be in 1.." +
                                      str(std::min(c.max_text_len - 2, MVLM_MAX_CAPTION_TOKENS)));
    }
    if (options->num_beams < 1 || 2 * static_cast<int64_t>(options->num_beams) > c.vocab_size) {
      fail(MVLM_INVALID_ARGUMENT, "num_beams is " + str(options->num_beams) + ", it must be in 1.." + str(c.vocab_size / 2));
    }
    if (!std::isfinite(options->length_penalty)) fail(MVLM_INVALID_ARGUMENT, "length_penalty is not finite");
    CachedDecoder decoder(c, *inputs, prefix_keys, prefix_values, options->num_beams, step, user_data);
    if (options->num_beams == 1) {
      greedy(decoder, c, static_cast<size_t>(steps), *caption);
    } else {
      beam_search(decoder, c, static_cast<size_t>(steps), static_cast<size_t>(options->num_beams),
                  options->length_penalty, *caption);
    }
  });
}

}  // extern "C"
