// Workgroup-wide sum and max of one float per invocation. With USE_SUBGROUP the subgroup arithmetic fast path is used;
// otherwise a shared-memory tree (workgroup size must be a power of two). Every invocation receives the result.
#ifndef VKPEFT_REDUCE_GLSL
#define VKPEFT_REDUCE_GLSL

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif

shared float reduce_buf[gl_WorkGroupSize.x];

#ifdef USE_SUBGROUP
#define WG_REDUCE(NAME, SUBGROUP_OP, COMBINE)                                   \
float NAME(float v)                                                            \
{                                                                              \
    v = SUBGROUP_OP(v);                                                        \
    barrier();                                                                 \
    if (subgroupElect()) reduce_buf[gl_SubgroupID] = v;                        \
    barrier();                                                                 \
    float r = reduce_buf[0];                                                   \
    for (uint i = 1; i < gl_NumSubgroups; i++) r = COMBINE(r, reduce_buf[i]);  \
    return r;                                                                  \
}
#else
#define WG_REDUCE(NAME, SUBGROUP_OP, COMBINE)                                   \
float NAME(float v)                                                            \
{                                                                              \
    uint t = gl_LocalInvocationID.x;                                           \
    barrier();                                                                 \
    reduce_buf[t] = v;                                                         \
    barrier();                                                                 \
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1)                      \
    {                                                                          \
        if (t < s) reduce_buf[t] = COMBINE(reduce_buf[t], reduce_buf[t + s]);  \
        barrier();                                                             \
    }                                                                          \
    return reduce_buf[0];                                                      \
}
#endif

float combine_add(float a, float b) { return a + b; }
float combine_max(float a, float b) { return max(a, b); }

WG_REDUCE(wg_sum, subgroupAdd, combine_add)
WG_REDUCE(wg_max, subgroupMax, combine_max)

#endif
