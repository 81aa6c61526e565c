// Push block shared by adaption_prompt_fwd.comp and adaption_prompt_bwd.comp (mirrored by runtime/Kernels/AdaptionPrompt.cs).
#ifndef VKPEFT_ADAPTION_PROMPT_GLSL
#define VKPEFT_ADAPTION_PROMPT_GLSL

layout(push_constant) uniform Push
{
    uint count;        // invocations that do work
    uint groups_x;
    uint n_heads;      // query heads
    uint group;        // query heads per KV head
    uint head_dim;
    uint prompt_len;   // P
    float scale;       // 1/sqrt(head_dim)
    uint row_lo, row_hi;   // dkv: the query rows this dispatch sums over
    uint off0, off1, off2, off3, off4, off5, off6;   // element offsets of bindings 0..6
} pc;

#endif
