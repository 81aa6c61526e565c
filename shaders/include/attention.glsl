// Shared pieces of the causal grouped-query attention kernels (attention_fwd, attention_bwd_dq, attention_bwd_dkv):
// push block, head-dimension loops and the workgroup geometry. One invocation owns one query row (or key row).
#ifndef VKPEFT_ATTENTION_GLSL
#define VKPEFT_ATTENTION_GLSL

#include "common.glsl"

// HD: the head dimension (a -D define per variant). Loops over it are fully unrolled and the loops over the BC rows
// of a block stay rolled: lavapipe stops every loop of an invocation after 65535 iterations in total (gallivm's loop
// limiter), so per-element loops must not iterate; and unrolling both levels makes its compile take minutes.
#ifndef HD
#define HD 64u
#endif
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
    uint head_dim;    // == HD (checked by the host)
    uint off0, off1, off2, off3, off4, off5, off6, off7;   // element offset inside binding i
} pc;

#endif
