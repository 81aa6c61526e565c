#version 450
// bench_fma: measures peak fp32 FMA throughput. Each invocation runs `iterations` rounds of 16 independent vec4 FMA
// chains (128 FLOP per round) and writes one value so the work cannot be removed. Writes out[i].
#include "common.glsl"

layout(std430, set = 0, binding = 0) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push
{
    uint iterations;
    uint groups_x;
    float seed;
} pc;

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
