// The tokprune kernel library for onnxruntime's CPU execution provider (docs/design.md §3): the ops
// tokprune::TokenPrune and tokprune::ScoredAttention (version 1).
//
// Each is the compiled twin of its PyTorch reference (onnx_tokprune.scoring.token_prune_reference,
// onnx_tokprune.scored_attention.scored_attention_reference) and of its ONNX function in
// onnx_tokprune/export/op.py; tests/test_kernel.py holds the three equal.
//
// ---- TokenPrune ----
// Inputs : hidden f32[B,S,D], score f32[B,S], mask i64[B,S], threshold f32[], bin_mask i64[NB],
//          keep_ratio f32[]
// Outputs: hidden f32[B,K,D], mask i64[B,K], kept_index i64[B,K] (-1 on padding),
//          K = the batch's largest kept count
// Attribute: bin_rounding (string, optional): "exact" (default) or "top".
//
// Per row: valid[j] = mask[j] == 1 and j != 0; rank = position of j when the row's positions are
// sorted by descending key (key = score for valid tokens, -inf otherwise; NaN first, ties to the
// lower position: torch.sort(descending=True, stable=True)); n = number of valid tokens;
//   keep[j] = valid[j] and score[j] >= threshold and bin_mask[bin(rank)] == 1 and rank < k
//   with k = ceil(keep_ratio * n * (1 - 1e-6)) in float32, and CLS (j == 0) kept iff mask[0] == 1.
// Kept rows are packed left in their original order, padding rows are exactly 0.
//
// ---- ScoredAttention ----
// Inputs : qkv f32[B,S,3D] (Q | K | V, heads of D/H columns each), mask i64[B,S] (1 = kept)
// Outputs: context f32[B,S,D], score f32[B,S]
// Attributes: num_heads (int), normalizer (float; 0 = the row's kept count)
// Per row b and head h: p[i,j] = softmax_j(q_i . k_j / sqrt(D/H)) over the kept keys j (masked keys
// get exactly 0, as exp underflows in the reference), context[i] = sum_j p[i,j] v_j for every query
// i (padding rows included), score[j] = sum_h sum_{i kept} p[i,j] / (H * N) with N the normalizer or
// the row's kept count. Heads run in parallel on onnxruntime's intra-op thread pool.
//
// Built by custom_ops/build.py against the onnxruntime headers of API version ORT_API_VERSION
// (no link against libonnxruntime: everything goes through the OrtApi handed to RegisterCustomOps).

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {

constexpr const char* kDomain = "tokprune";
constexpr const char* kOpName = "TokenPrune";
constexpr const char* kAttentionOpName = "ScoredAttention";
// onnx_tokprune.scoring.TOP_K_SHRINK (a Python double) as the float32 the reference multiplies by.
const float kTopKShrink = static_cast<float>(1.0 - 1e-6);
const float kTopEps = 1e-6f;  // ToP's `rank / (n + 1e-6)`, float32

enum class BinRounding { kExact, kTop };

// float -> int64 as torch's `.long()` does on x86-64 (cvttss2si): truncation, and INT64_MIN for
// NaN or out-of-range values, without the undefined behaviour of a plain cast.
inline int64_t FloatToInt64(float v) {
  if (!(v >= -9.2233720368547758e18f && v < 9.2233720368547758e18f)) return INT64_MIN;
  return static_cast<int64_t>(v);
}

// descending order of torch.sort(descending=True, stable=True): NaN before every number,
// equal keys by position
struct Entry {
  float key;
  int64_t pos;
};

inline bool Before(const Entry& a, const Entry& b) {
  const bool a_nan = std::isnan(a.key), b_nan = std::isnan(b.key);
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a.key != b.key) return a.key > b.key;
  return a.pos < b.pos;
}

#define TOKPRUNE_RETURN_IF_ERROR(expr)      \
  do {                                      \
    OrtStatus* _status = (expr);            \
    if (_status != nullptr) return _status; \
  } while (0)

// What both kernels share: the API, one-line errors prefixed with the op's name, tensor access.
struct KernelBase {
  const OrtApi& api;
  const char* op_name;

  KernelBase(const OrtApi& api_, const char* op_name_) : api(api_), op_name(op_name_) {}

  OrtStatus* Error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT) const {
    return api.CreateStatus(code, ("tokprune::" + std::string(op_name) + ": " + message).c_str());
  }

  // data pointer, shape of input `index`
  OrtStatus* Input(OrtKernelContext* ctx, size_t index, const void** data, std::vector<int64_t>* shape) const {
    const OrtValue* value = nullptr;
    TOKPRUNE_RETURN_IF_ERROR(api.KernelContext_GetInput(ctx, index, &value));
    if (value == nullptr) return Error("input " + std::to_string(index) + " is missing");
    OrtTensorTypeAndShapeInfo* info = nullptr;
    TOKPRUNE_RETURN_IF_ERROR(api.GetTensorTypeAndShape(value, &info));
    size_t rank = 0;
    OrtStatus* status = api.GetDimensionsCount(info, &rank);
    if (status == nullptr) {
      shape->assign(rank, 0);
      status = api.GetDimensions(info, shape->data(), rank);
    }
    api.ReleaseTensorTypeAndShapeInfo(info);
    if (status != nullptr) return status;
    void* mutable_data = nullptr;  // API 21 has no const accessor; the data is only read
    TOKPRUNE_RETURN_IF_ERROR(api.GetTensorMutableData(const_cast<OrtValue*>(value), &mutable_data));
    *data = mutable_data;
    return nullptr;
  }

  OrtStatus* Output(OrtKernelContext* ctx, size_t index, const std::vector<int64_t>& shape, void** data) const {
    OrtValue* value = nullptr;
    TOKPRUNE_RETURN_IF_ERROR(api.KernelContext_GetOutput(ctx, index, shape.data(), shape.size(), &value));
    return api.GetTensorMutableData(value, data);
  }

  // `compute` with C++ exceptions turned into statuses (none may cross the C API)
  template <typename F>
  OrtStatus* Guarded(F&& compute) const {
    try {
      return compute();
    } catch (const std::bad_alloc&) {
      return Error("out of memory", ORT_FAIL);
    } catch (const std::exception& e) {
      return Error(e.what(), ORT_FAIL);
    } catch (...) {
      return Error("unknown error", ORT_FAIL);
    }
  }
};

struct TokenPruneKernel : KernelBase {
  BinRounding rounding;

  TokenPruneKernel(const OrtApi& api_, BinRounding rounding_) : KernelBase(api_, kOpName), rounding(rounding_) {}

  OrtStatus* ComputeV2(OrtKernelContext* ctx) const {
    return Guarded([&] { return Compute(ctx); });
  }

  OrtStatus* Compute(OrtKernelContext* ctx) const {
    const void* raw[6];
    std::vector<int64_t> shapes[6];
    for (size_t i = 0; i < 6; ++i) TOKPRUNE_RETURN_IF_ERROR(Input(ctx, i, &raw[i], &shapes[i]));
    const std::vector<int64_t>& hs = shapes[0];
    if (hs.size() != 3) return Error("hidden must be [B,S,D]");
    const int64_t B = hs[0], S = hs[1], D = hs[2];
    if (shapes[1] != std::vector<int64_t>{B, S}) return Error("score must be [B,S] like hidden's first two dims");
    if (shapes[2] != std::vector<int64_t>{B, S}) return Error("mask must be [B,S] like hidden's first two dims");
    auto numel = [](const std::vector<int64_t>& s) {
      int64_t n = 1;
      for (int64_t d : s) n *= d;
      return n;
    };
    if (numel(shapes[3]) != 1) return Error("threshold must hold one value");
    if (shapes[4].size() != 1 || shapes[4][0] < 1) return Error("bin_mask must be a non-empty 1-D tensor");
    if (numel(shapes[5]) != 1) return Error("keep_ratio must hold one value");

    const float* hidden = static_cast<const float*>(raw[0]);
    const float* score = static_cast<const float*>(raw[1]);
    const int64_t* mask = static_cast<const int64_t*>(raw[2]);
    const float threshold = *static_cast<const float*>(raw[3]);
    const int64_t* bin_mask = static_cast<const int64_t*>(raw[4]);
    const int64_t nbins = shapes[4][0];
    const float keep_ratio = *static_cast<const float*>(raw[5]);

    // kept positions of every row, packed: row b owns kept[b*S, b*S + counts[b])
    std::vector<int64_t> kept(static_cast<size_t>(B * S));
    std::vector<int64_t> counts(static_cast<size_t>(B), 0);
    std::vector<Entry> order(static_cast<size_t>(S));
    std::vector<int64_t> rank(static_cast<size_t>(S));
    int64_t kmax = 0;
    for (int64_t b = 0; b < B; ++b) {
      const float* sc = score + b * S;
      const int64_t* mk = mask + b * S;
      // valid tokens in descending score order; rank among them
      int64_t n = 0;
      for (int64_t j = 1; j < S; ++j) {
        if (mk[j] == 1) order[n++] = Entry{sc[j], j};
      }
      std::sort(order.begin(), order.begin() + n, Before);
      for (int64_t r = 0; r < n; ++r) rank[order[r].pos] = r;
      // The reference ranks all positions with -inf for the invalid ones: a valid token scored -inf
      // also comes after the invalid positions (CLS included) before it.
      int64_t invalid_before = 0;
      for (int64_t j = 0; j < S; ++j) {
        const bool valid = j != 0 && mk[j] == 1;
        if (!valid) {
          ++invalid_before;
        } else if (sc[j] == -INFINITY) {
          rank[j] += invalid_before;
        }
      }

      const float k_f = std::ceil(keep_ratio * static_cast<float>(n) * kTopKShrink);
      const int64_t k = FloatToInt64(k_f);
      const float n_eps = static_cast<float>(n) + kTopEps;
      const int64_t n_safe = std::max<int64_t>(n, 1);

      int64_t* out = kept.data() + b * S;
      int64_t count = 0;
      if (S > 0 && mk[0] == 1) out[count++] = 0;
      for (int64_t j = 1; j < S; ++j) {
        if (mk[j] != 1 || !(sc[j] >= threshold)) continue;
        const int64_t r = rank[j];
        if (!(r < k)) continue;
        int64_t bin;
        if (rounding == BinRounding::kTop) {
          float q = static_cast<float>(r) / n_eps;
          q = std::min(std::max(q, 0.0f), 1.0f) * static_cast<float>(nbins);
          bin = std::min(FloatToInt64(std::floor(q)), nbins - 1);
        } else {
          bin = std::min(r * nbins / n_safe, nbins - 1);
        }
        if (bin_mask[bin] != 1) continue;
        out[count++] = j;
      }
      counts[b] = count;
      kmax = std::max(kmax, count);
    }

    void* out_raw[3];
    TOKPRUNE_RETURN_IF_ERROR(Output(ctx, 0, {B, kmax, D}, &out_raw[0]));
    TOKPRUNE_RETURN_IF_ERROR(Output(ctx, 1, {B, kmax}, &out_raw[1]));
    TOKPRUNE_RETURN_IF_ERROR(Output(ctx, 2, {B, kmax}, &out_raw[2]));
    float* out_hidden = static_cast<float*>(out_raw[0]);
    int64_t* out_mask = static_cast<int64_t*>(out_raw[1]);
    int64_t* out_index = static_cast<int64_t*>(out_raw[2]);
    const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t* src = kept.data() + b * S;
      float* dst = out_hidden + b * kmax * D;
      for (int64_t i = 0; i < kmax; ++i) {
        if (i < counts[b]) {
          if (row_bytes) std::memcpy(dst + i * D, hidden + (b * S + src[i]) * D, row_bytes);
          out_mask[b * kmax + i] = 1;
          out_index[b * kmax + i] = src[i];
        } else {
          if (row_bytes) std::memset(dst + i * D, 0, row_bytes);
          out_mask[b * kmax + i] = 0;
          out_index[b * kmax + i] = -1;
        }
      }
    }
    return nullptr;
  }
};

struct TokenPruneOp : Ort::CustomOpBase<TokenPruneOp, TokenPruneKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const {
    BinRounding rounding = BinRounding::kExact;
    size_t size = 0;
    OrtStatus* status = api.KernelInfoGetAttribute_string(info, "bin_rounding", nullptr, &size);
    if (status != nullptr) {
      api.ReleaseStatus(status);  // attribute absent: the default
    } else {
      std::string value(size, '\0');
      TOKPRUNE_RETURN_IF_ERROR(api.KernelInfoGetAttribute_string(info, "bin_rounding", &value[0], &size));
      value.resize(std::strlen(value.c_str()));
      if (value == "top") {
        rounding = BinRounding::kTop;
      } else if (value != "exact") {
        return api.CreateStatus(ORT_INVALID_ARGUMENT,
                                ("tokprune::TokenPrune: bin_rounding must be 'exact' or 'top', got '" + value + "'").c_str());
      }
    }
    try {
      *op_kernel = new TokenPruneKernel(api, rounding);
    } catch (const std::bad_alloc&) {
      return api.CreateStatus(ORT_FAIL, "tokprune::TokenPrune: out of memory");
    }
    return nullptr;
  }

  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }

  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    switch (index) {
      case 2:
      case 4:
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;  // mask, bin_mask
      default:
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;  // hidden, score, threshold, keep_ratio
    }
  }

  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  }
};

// ---- ScoredAttention ----

// exp(x) for the softmax's x = logit - max <= 0, in plain float arithmetic the compiler vectorises
// (std::exp is a scalar call, and the softmax's exps dominate the op at BERT lengths): Cephes' expf
// range reduction and polynomial, within 2 ulp of std::exp; below -87 (under 1e-38, next to a sum
// >= 1) it returns 0.
inline float ExpNonPositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) * (1 << 23);  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : y * scale;
}

constexpr int64_t kBlock = 8;  // floats per vector (one AVX2 register; two SSE ones in the default clone)

// GCC vector extensions: plain C++ arithmetic on 8 floats, lowered to whatever the clone targets.
typedef float Vec __attribute__((vector_size(kBlock * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// The unscaled logits q . k of Q queries for keys [c0, c0 + T * kBlock) (K transposed, row stride m),
// each summed over d in order; Q * T vectors of sums stay in registers. Each key vector is loaded once
// for all Q queries (at long lengths K does not fit in L1); the grouping does not change any sum.
template <int Q, int T>
inline void LogitTiles(const float* const* q, const float* keys_t, int64_t m, int64_t dh, int64_t c0, float* const* logits) {
  Vec acc[Q][T] = {};
  for (int64_t d = 0; d < dh; ++d) {
    const float* kd = keys_t + d * m + c0;
    Vec kv[T];
    for (int t = 0; t < T; ++t) kv[t] = Load(kd + t * kBlock);
    for (int j = 0; j < Q; ++j) {
      const Vec qd = Vec{} + q[j][d];
      for (int t = 0; t < T; ++t) acc[j][t] += qd * kv[t];
    }
  }
  for (int j = 0; j < Q; ++j) {
    for (int t = 0; t < T; ++t) Store(logits[j] + c0 + t * kBlock, acc[j][t]);
  }
}

// Context columns [d0, d0 + T * kBlock) of Q queries: sum over the n kept keys of p_c v_c, in key order
// (each value vector loaded once for all Q).
template <int Q, int T>
inline void ContextTiles(const float* const* probs, const float* values, int64_t n, int64_t dh, int64_t d0, float* const* out) {
  Vec acc[Q][T] = {};
  for (int64_t c = 0; c < n; ++c) {
    const float* vc = values + c * dh + d0;
    Vec vv[T];
    for (int t = 0; t < T; ++t) vv[t] = Load(vc + t * kBlock);
    for (int j = 0; j < Q; ++j) {
      const Vec pc = Vec{} + probs[j][c];
      for (int t = 0; t < T; ++t) acc[j][t] += pc * vv[t];
    }
  }
  for (int j = 0; j < Q; ++j) {
    for (int t = 0; t < T; ++t) Store(out[j] + d0 + t * kBlock, acc[j][t]);
  }
}

constexpr int64_t kQueries = 4;  // queries per pass over K and V

// max and sum of x[0, n) in kBlock lanes (a sequential reduction is bound by the latency of each step)
inline float LaneMax(const float* x, int64_t n) {
  Vec lanes = Vec{} - INFINITY;
  int64_t c = 0;
  for (; c + kBlock <= n; c += kBlock) {
    const Vec v = Load(x + c);
    lanes = v > lanes ? v : lanes;
  }
  float result = -INFINITY;
  for (int64_t l = 0; l < kBlock; ++l) result = std::max(result, lanes[l]);
  for (; c < n; ++c) result = std::max(result, x[c]);
  return result;
}

inline float LaneSum(const float* x, int64_t n) {
  Vec lanes = {};
  int64_t c = 0;
  for (; c + kBlock <= n; c += kBlock) lanes += Load(x + c);
  float result = 0.0f;
  for (int64_t l = 0; l < kBlock; ++l) result += lanes[l];
  for (; c < n; ++c) result += x[c];
  return result;
}

// One (row, head) of ScoredAttention; `partial` receives that head's sum over kept queries per key.
struct HeadTask {
  const float* qkv;
  const int64_t* mask;
  float* context;
  float* partial;  // [B, H, S]
  int64_t S, H, dh;
  std::atomic<bool> failed{false};  // an exception in a worker (no exception may leave the callback)
};

// The (row, head) pair `index` of `t`: K (transposed) and V of the kept keys packed, then per group of
// kQueries queries the logits, softmax and context in register tiles (LogitTiles, ContextTiles). On x86-64 an AVX2
// clone is picked at load time when the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
void ComputeHead(const HeadTask& t, size_t index) {
  const int64_t S = t.S, H = t.H, dh = t.dh, D = H * dh, row = 3 * D;
  const int64_t b = static_cast<int64_t>(index) / H, h = static_cast<int64_t>(index) % H;
  const float* base = t.qkv + b * S * row;
  const int64_t* mk = t.mask + b * S;
  float* partial = t.partial + (b * H + h) * S;
  const float sqrt_d = std::sqrt(static_cast<float>(dh));

  // the kept keys: K transposed ([dh, m], m = n rounded up to whole blocks, zero-filled) and V
  // ([n, dh]) packed; with no kept key every logit is the same (the reference's bias swamps it) and
  // the softmax is uniform over all S keys
  std::vector<int64_t> keys;
  keys.reserve(static_cast<size_t>(S));
  for (int64_t j = 0; j < S; ++j) {
    if (mk[j] == 1) keys.push_back(j);
  }
  const bool uniform = keys.empty();
  if (uniform) {
    for (int64_t j = 0; j < S; ++j) keys.push_back(j);
  }
  const int64_t n = static_cast<int64_t>(keys.size()), m = (n + kBlock - 1) / kBlock * kBlock;
  std::vector<float> kt(static_cast<size_t>(dh * m), 0.0f), v(static_cast<size_t>(n * dh)), p(static_cast<size_t>(kQueries * m));
  for (int64_t c = 0; c < n; ++c) {
    const float* src = base + keys[c] * row;
    for (int64_t d = 0; d < dh; ++d) kt[d * m + c] = src[D + h * dh + d];
    std::memcpy(&v[c * dh], src + 2 * D + h * dh, static_cast<size_t>(dh) * sizeof(float));
  }
  std::vector<float> sums(static_cast<size_t>(n), 0.0f);  // what each kept key receives from the kept queries
  float* __restrict received = sums.data();
  const float* __restrict keys_t = kt.data();
  const float* __restrict values = v.data();
  const int64_t dh_blocked = dh / kBlock * kBlock;
  // kQueries queries at a time: their logits (each key block loaded once for all), then each one's
  // softmax, then their contexts (each value row loaded once for all); a last partial group goes one
  // query at a time. Every sum keeps its order, so the results do not depend on the grouping.
  for (int64_t i0 = 0; i0 < S; i0 += kQueries) {
    const int64_t group = std::min(kQueries, S - i0);
    const float* q[kQueries];
    float* probs[kQueries];
    float* out[kQueries];
    for (int64_t j = 0; j < group; ++j) {
      q[j] = base + (i0 + j) * row + h * dh;
      probs[j] = p.data() + j * m;
      out[j] = t.context + (b * S + i0 + j) * D + h * dh;
    }
    if (uniform) {
      for (int64_t j = 0; j < group; ++j) {
        for (int64_t c = 0; c < n; ++c) probs[j][c] = 1.0f / static_cast<float>(n);
      }
    } else {
      if (group == kQueries) {
        int64_t c0 = 0;
        for (; c0 + 2 * kBlock <= m; c0 += 2 * kBlock) LogitTiles<kQueries, 2>(q, keys_t, m, dh, c0, probs);
        for (; c0 < m; c0 += kBlock) LogitTiles<kQueries, 1>(q, keys_t, m, dh, c0, probs);
      } else {
        for (int64_t j = 0; j < group; ++j) {
          int64_t c0 = 0;
          for (; c0 + 4 * kBlock <= m; c0 += 4 * kBlock) LogitTiles<1, 4>(&q[j], keys_t, m, dh, c0, &probs[j]);
          for (; c0 < m; c0 += kBlock) LogitTiles<1, 1>(&q[j], keys_t, m, dh, c0, &probs[j]);
        }
      }
      for (int64_t j = 0; j < group; ++j) {
        float* __restrict row_probs = probs[j];
        for (int64_t c = 0; c < n; ++c) row_probs[c] /= sqrt_d;
        const float top = LaneMax(row_probs, n);
        for (int64_t c = 0; c < n; ++c) row_probs[c] = ExpNonPositive(row_probs[c] - top);
        const float sum = LaneSum(row_probs, n);
        for (int64_t c = 0; c < n; ++c) row_probs[c] /= sum;
      }
    }
    if (group == kQueries) {
      int64_t d0 = 0;
      for (; d0 + 2 * kBlock <= dh_blocked; d0 += 2 * kBlock) ContextTiles<kQueries, 2>(probs, values, n, dh, d0, out);
      for (; d0 < dh_blocked; d0 += kBlock) ContextTiles<kQueries, 1>(probs, values, n, dh, d0, out);
    } else {
      for (int64_t j = 0; j < group; ++j) {
        int64_t d0 = 0;
        for (; d0 + 4 * kBlock <= dh_blocked; d0 += 4 * kBlock) ContextTiles<1, 4>(&probs[j], values, n, dh, d0, &out[j]);
        for (; d0 < dh_blocked; d0 += kBlock) ContextTiles<1, 1>(&probs[j], values, n, dh, d0, &out[j]);
      }
    }
    for (int64_t j = 0; j < group; ++j) {
      for (int64_t d = dh_blocked; d < dh; ++d) {
        float acc = 0.0f;
        for (int64_t c = 0; c < n; ++c) acc += probs[j][c] * values[c * dh + d];
        out[j][d] = acc;
      }
      if (mk[i0 + j] == 1 && !uniform) {
        for (int64_t c = 0; c < n; ++c) received[c] += probs[j][c];
      }
    }
  }
  if (!uniform) {
    for (int64_t c = 0; c < n; ++c) partial[keys[c]] = received[c];
  }
}

// onnxruntime's ParallelFor callback: the HeadTask at `data`, pair `index`.
void RunHead(void* data, size_t index) {
  HeadTask& t = *static_cast<HeadTask*>(data);
  try {
    ComputeHead(t, index);
  } catch (...) {
    t.failed = true;
  }
}

struct ScoredAttentionKernel : KernelBase {
  int64_t num_heads;
  float normalizer;

  ScoredAttentionKernel(const OrtApi& api_, int64_t num_heads_, float normalizer_)
      : KernelBase(api_, kAttentionOpName), num_heads(num_heads_), normalizer(normalizer_) {}

  OrtStatus* ComputeV2(OrtKernelContext* ctx) const {
    return Guarded([&] { return Compute(ctx); });
  }

  OrtStatus* Compute(OrtKernelContext* ctx) const {
    const void* raw[2];
    std::vector<int64_t> shapes[2];
    for (size_t i = 0; i < 2; ++i) TOKPRUNE_RETURN_IF_ERROR(Input(ctx, i, &raw[i], &shapes[i]));
    const std::vector<int64_t>& qs = shapes[0];
    if (qs.size() != 3) return Error("qkv must be [B,S,3D]");
    const int64_t B = qs[0], S = qs[1], H = num_heads;
    if (qs[2] % (3 * H) != 0) {
      return Error("qkv's last dim (" + std::to_string(qs[2]) + ") is not 3 * num_heads (" + std::to_string(H) + ") * head size");
    }
    const int64_t D = qs[2] / 3, dh = D / H;
    if (shapes[1] != std::vector<int64_t>{B, S}) return Error("mask must be [B,S] like qkv's first two dims");
    const int64_t* mask = static_cast<const int64_t*>(raw[1]);

    void* out_raw[2];
    TOKPRUNE_RETURN_IF_ERROR(Output(ctx, 0, {B, S, D}, &out_raw[0]));
    TOKPRUNE_RETURN_IF_ERROR(Output(ctx, 1, {B, S}, &out_raw[1]));
    float* score = static_cast<float*>(out_raw[1]);
    std::vector<float> partial(static_cast<size_t>(B * H * S), 0.0f);
    HeadTask task{static_cast<const float*>(raw[0]), mask, static_cast<float*>(out_raw[0]), partial.data(), S, H, dh};
    if (B * H * S > 0) TOKPRUNE_RETURN_IF_ERROR(api.KernelContext_ParallelFor(ctx, RunHead, static_cast<size_t>(B * H), 0, &task));
    if (task.failed) return Error("out of memory", ORT_FAIL);
    for (int64_t b = 0; b < B; ++b) {
      float denominator = static_cast<float>(H) * normalizer;
      if (!(normalizer > 0.0f)) {
        float kept = 0.0f;
        for (int64_t j = 0; j < S; ++j) kept += mask[b * S + j] == 1 ? 1.0f : 0.0f;
        denominator = kept * static_cast<float>(H);
      }
      const float inverse = normalizer > 0.0f ? static_cast<float>(1.0 / (static_cast<double>(H) * normalizer)) : 0.0f;
      for (int64_t j = 0; j < S; ++j) {
        float total = 0.0f;
        for (int64_t h = 0; h < H; ++h) total += partial[(b * H + h) * S + j];
        score[b * S + j] = normalizer > 0.0f ? total * inverse : total / denominator;
      }
    }
    return nullptr;
  }
};

struct ScoredAttentionOp : Ort::CustomOpBase<ScoredAttentionOp, ScoredAttentionKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** op_kernel) const {
    int64_t num_heads = 0;
    float normalizer = 0.0f;
    OrtStatus* status = api.KernelInfoGetAttribute_int64(info, "num_heads", &num_heads);
    if (status != nullptr || num_heads < 1) {
      if (status != nullptr) api.ReleaseStatus(status);
      return api.CreateStatus(ORT_INVALID_ARGUMENT, "tokprune::ScoredAttention: needs a positive num_heads attribute");
    }
    status = api.KernelInfoGetAttribute_float(info, "normalizer", &normalizer);
    if (status != nullptr) api.ReleaseStatus(status);  // absent: the row's kept count
    try {
      *op_kernel = new ScoredAttentionKernel(api, num_heads, normalizer);
    } catch (const std::bad_alloc&) {
      return api.CreateStatus(ORT_FAIL, "tokprune::ScoredAttention: out of memory");
    }
    return nullptr;
  }

  const char* GetName() const { return kAttentionOpName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }

  size_t GetInputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

  size_t GetOutputTypeCount() const { return 2; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// One op object and one domain for the life of the process: every SessionOptions that loads the
// library gets the same (read-only) domain, so repeated registrations allocate nothing new.
TokenPruneOp& Op() {
  static TokenPruneOp op;
  return op;
}

ScoredAttentionOp& AttentionOp() {
  static ScoredAttentionOp op;
  return op;
}

std::mutex g_domain_mutex;
OrtCustomOpDomain* g_domain = nullptr;

}  // namespace

// The one exported symbol (the library is compiled with -fvisibility=hidden; ORT_EXPORT is empty on Linux).
extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    const OrtApi* api1 = api_base->GetApi(1);
    std::string message = "tokprune kernel: built against onnxruntime API " + std::to_string(ORT_API_VERSION) +
                          ", which this onnxruntime (" + api_base->GetVersionString() + ") does not provide";
    return api1 == nullptr ? nullptr : api1->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  std::lock_guard<std::mutex> lock(g_domain_mutex);
  if (g_domain == nullptr) {
    OrtCustomOpDomain* domain = nullptr;
    TOKPRUNE_RETURN_IF_ERROR(api->CreateCustomOpDomain(kDomain, &domain));
    OrtStatus* status = api->CustomOpDomain_Add(domain, &Op());
    if (status == nullptr) status = api->CustomOpDomain_Add(domain, &AttentionOp());
    if (status != nullptr) {
      api->ReleaseCustomOpDomain(domain);
      return status;
    }
    g_domain = domain;
  }
  return api->AddCustomOpDomain(options, g_domain);
}
