// Push block shared by the matmul shaders (matmul.comp, matmul_lanes.comp, matmul_lanes_nn.comp) and their quantized
// variants; mirrored by MatPush in runtime/Kernels/MatMul.cs.
#ifndef VKPEFT_MATMUL_PUSH_GLSL
#define VKPEFT_MATMUL_PUSH_GLSL

layout(push_constant) uniform Push
{
    uint M, N, K;
    uint lda, ldb, ldc;
    uint a_offset, b_offset, c_offset;
    float alpha, beta;
    uint q_block, q_cols;   // quantized B only: block/group size and in_features of the weight
    float q_offset;         // quantized B only: double-quantization offset
} pc;

#endif
