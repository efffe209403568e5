// tokprune::TokenPrune (version 1) for onnxruntime's CPU execution provider (DESIGN.md §3).
//
// The compiled twin of onnx_tokprune.scoring.token_prune_reference and of the ONNX function in
// onnx_tokprune/export/op.py; tests/test_kernel.py holds the three equal.
//
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
// Built by custom_ops/build.py against the onnxruntime headers of API version ORT_API_VERSION
// (no link against libonnxruntime: everything goes through the OrtApi handed to RegisterCustomOps).

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <algorithm>
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

struct TokenPruneKernel {
  const OrtApi& api;
  BinRounding rounding;

  TokenPruneKernel(const OrtApi& api_, BinRounding rounding_) : api(api_), rounding(rounding_) {}

  OrtStatus* Error(const std::string& message) const {
    return api.CreateStatus(ORT_INVALID_ARGUMENT, ("tokprune::TokenPrune: " + message).c_str());
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

  OrtStatus* ComputeV2(OrtKernelContext* ctx) const {
    try {
      return Compute(ctx);
    } catch (const std::bad_alloc&) {
      return api.CreateStatus(ORT_FAIL, "tokprune::TokenPrune: out of memory");
    } catch (const std::exception& e) {
      return api.CreateStatus(ORT_FAIL, (std::string("tokprune::TokenPrune: ") + e.what()).c_str());
    } catch (...) {
      return api.CreateStatus(ORT_FAIL, "tokprune::TokenPrune: unknown error");
    }
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

// One op object and one domain for the life of the process: every SessionOptions that loads the
// library gets the same (read-only) domain, so repeated registrations allocate nothing new.
TokenPruneOp& Op() {
  static TokenPruneOp op;
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
    if (status != nullptr) {
      api->ReleaseCustomOpDomain(domain);
      return status;
    }
    g_domain = domain;
  }
  return api->AddCustomOpDomain(options, g_domain);
}
