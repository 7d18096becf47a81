// swift-tools-version:5.9
// MiniVLM for iOS/macOS: a Swift API over the shared native core (sdk/native), with Core ML, Core AI and
// ExecuTorch graph runners. The SwiftUI demo app in App/ depends on the `MiniVLM` library product.
//
// CMiniVLM compiles the core's C++ sources through symlinks (Sources/CMiniVLM/core -> sdk/native/src,
// Sources/CMiniVLM/include/minivlm -> sdk/native/include/minivlm), because SwiftPM only builds sources that
// sit inside the package folder. Clone the whole repository, not ios_demo/ alone.
import PackageDescription

let package = Package(
    name: "MiniVLM",
    // ExecuTorch builds run from iOS 17 / macOS 14; a Core ML build (one multifunction model) needs iOS 18 /
    // macOS 15, a Core AI build iOS 27 / macOS 27 (and an SDK with Core AI: CoreAIRunner is compiled only
    // `#if canImport(CoreAI)`), which the runners declare and Backends checks at run time.
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "MiniVLM", targets: ["MiniVLM"]),
    ],
    dependencies: [
        // ExecuTorch's prebuilt runtime (branch "swiftpm-<version>"); use the version that exported the .pte
        // files (manifest.json "tools.executorch") or newer.
        .package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.5.1"),
    ],
    targets: [
        .target(
            name: "CMiniVLM",
            path: "Sources/CMiniVLM",
            publicHeadersPath: "include",
            cxxSettings: [
                .headerSearchPath("include"),
            ]
        ),
        .target(
            name: "MiniVLM",
            dependencies: [
                "CMiniVLM",
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "backend_coreml", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
                // int8 builds look their embeddings up with quantized_decomposed::embedding_byte
                .product(name: "kernels_quantized", package: "executorch"),
            ],
            path: "Sources/MiniVLM"
        ),
        .testTarget(
            name: "MiniVLMTests",
            dependencies: ["MiniVLM"],
            path: "Tests/MiniVLMTests"
        ),
    ],
    cxxLanguageStandard: .cxx17
)
