// Shared pieces of the causal grouped-query attention kernels (attention_fwd, attention_bwd_dq, attention_bwd_dkv and
// their flash versions): push block, head-dimension loops and the workgroup geometry. In the plain kernels one
// invocation owns one query row (or key row); attention_flash.glsl describes the flash kernels' layout.
#ifndef VKPEFT_ATTENTION_GLSL
#define VKPEFT_ATTENTION_GLSL

#include "common.glsl"

// HD: the size of the per-invocation arrays (a -D define per variant); HD_RT: the real head dimension (<= HD), a push
// constant, so loops over it stay rolled (unrolled, lavapipe takes minutes to compile these kernels).
// lavapipe ends every loop of an invocation once 65535 iterations have run in total (gallivm's loop limiter), so the
// host bounds the keys (attention_fwd, attention_bwd_dq) or (query head, query) pairs (attention_bwd_dkv) one dispatch
// loops over, and chains dispatches: the first writes its outputs, later ones (accumulate != 0) combine with them.
#ifndef HD
#define HD 64u
#endif
#define HD_RT pc.head_dim
// BC: keys (or queries) handled per block: one softmax rescale per block, and the block staged in shared memory with
// USE_SHARED (GPUs). Without USE_SHARED every block element is read straight from the buffer at an address that is the
// same for the whole workgroup, which CPU devices (lavapipe) serve as one broadcast load.
#ifndef BC
#define BC 8u
#endif

// Large finite stand-in for -inf: exp(NEG_BIG - m) is exactly 0 and NEG_BIG - NEG_BIG stays finite.
#define NEG_BIG (-1.0e30)

layout(push_constant) uniform Push
{
    uint T;           // queries per sequence (rows of q per sequence)
    uint S;           // keys attended at most: start_pos + T
    uint start_pos;   // position of query row 0
    uint kv_stride;   // rows of k/v per sequence (>= S)
    uint group;       // query heads per kv head
    uint n_heads;
    uint ldq;         // n_heads * head_dim (row length of q, o, dO, dQ)
    uint ldk;         // n_kv_heads * head_dim (row length of k, v, dK, dV)
    float scale;      // 1 / sqrt(head_dim)
    uint head_dim;    // <= HD
    uint off0, off1, off2, off3, off4, off5, off6, off7;   // element offset inside binding i
    // This dispatch's share: keys [lo, hi) (attention_fwd, attention_bwd_dq), or query heads [head_lo, head_hi) of each
    // kv head's group and query rows [lo, hi) (attention_bwd_dkv); accumulate != 0: combine with the outputs already there.
    uint head_lo, head_hi, lo, hi, accumulate;
} pc;

#endif
