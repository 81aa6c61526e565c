#version 450
// bench_fma: measures peak fp32 FMA throughput. Each invocation runs `iterations` rounds of 16 independent vec4 FMA
// chains (128 FLOP per round) and writes one value so the work cannot be removed. Writes out[i].
// COOPMAT: measures the peak of VK_NV_cooperative_matrix 16x16x16 fp16 x fp16 -> fp32 products instead: each 32-wide
// subgroup runs `iterations` rounds of 4 independent multiply-add chains (4·2·16³ = 32,768 FLOP per round) and stores its
// four 16x16 accumulators at out[subgroup·1024 + 256·j] (summing them in the shader crashes Debian 12's glslc optimizer).
#include "common.glsl"
#ifdef COOPMAT
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : enable
#endif

layout(std430, set = 0, binding = 0) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push
{
    uint iterations;
    uint groups_x;
    float seed;
} pc;

#ifdef COOPMAT
#define CM_IN fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_ACC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
void main()
{
    uint sg = (gl_WorkGroupID.y * pc.groups_x + gl_WorkGroupID.x) * gl_NumSubgroups + gl_SubgroupID;
    CM_IN a = CM_IN(float16_t(pc.seed * 1e-3));
    CM_IN b = CM_IN(float16_t(1e-3));
    CM_ACC acc0 = CM_ACC(0.0), acc1 = CM_ACC(1.0), acc2 = CM_ACC(2.0), acc3 = CM_ACC(3.0);
    for (uint it = 0; it < pc.iterations; it++)
    {
        acc0 = coopMatMulAddNV(a, b, acc0);
        acc1 = coopMatMulAddNV(a, b, acc1);
        acc2 = coopMatMulAddNV(a, b, acc2);
        acc3 = coopMatMulAddNV(a, b, acc3);
    }
    coopMatStoreNV(acc0, result, sg * 1024u, 16u, false);
    coopMatStoreNV(acc1, result, sg * 1024u + 256u, 16u, false);
    coopMatStoreNV(acc2, result, sg * 1024u + 512u, 16u, false);
    coopMatStoreNV(acc3, result, sg * 1024u + 768u, 16u, false);
}
#else
void main()
{
    uint i = global_index_2d(pc.groups_x);
    vec4 m = vec4(0.999999, 1.000001, 0.9999995, 1.0000005);
    vec4 acc[16];
    [[unroll]] for (uint j = 0; j < 16; j++) acc[j] = vec4(pc.seed + float(i) * 1e-7 + float(j));
    for (uint it = 0; it < pc.iterations; it++)
    {
        [[unroll]] for (uint j = 0; j < 16; j++) acc[j] = fma(acc[j], m, vec4(1e-7));
    }
    vec4 s = vec4(0.0);
    [[unroll]] for (uint j = 0; j < 16; j++) s += acc[j];
    result[i] = s.x + s.y + s.z + s.w;
}
#endif
