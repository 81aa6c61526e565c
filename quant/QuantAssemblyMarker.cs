// Marker type naming the VkPeft.Quant assembly (used by the dependency-direction test).
namespace VkPeft.Quant;

public static class QuantAssemblyMarker;
