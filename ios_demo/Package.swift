// swift-tools-version:5.9
// MiniVLM for iOS/macOS: a Swift API over the shared native core (sdk/native), with Core ML, Core AI and
// ExecuTorch graph runners. The SwiftUI demo app in App/ depends on these library products.
//
// Two products, so that an app links ExecuTorch only when it asks for it:
//   MiniVLM            the pipelines, Core ML and Core AI runners; no ExecuTorch code or binary
//   MiniVLMExecuTorch  ExecuTorchRunner and the ExecuTorch runtime (kernels, XNNPACK / Core ML delegates);
//                      an app links it and calls `ExecuTorchBackend.register()` to open `--target executorch`
//                      builds. Without it, Backends refuses such a build with a one-line message.
// (SwiftPM package traits would do the same from Swift 6.1 on, but Xcode cannot yet switch a local package's
// traits from a project, and a second product works with every toolchain since 5.9.)
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
        .library(name: "MiniVLMExecuTorch", targets: ["MiniVLMExecuTorch"]),
    ],
    dependencies: [
        // ExecuTorch's prebuilt runtime (branch "swiftpm-<version>"); use the version that exported the .pte
        // files (manifest.json "tools.executorch") or newer, and keep ExecuTorchBackend.runtimeVersion equal
        // to it. Only the MiniVLMExecuTorch product links it.
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
            dependencies: ["CMiniVLM"],
            path: "Sources/MiniVLM"
        ),
        // ExecuTorch's thread pool size (its C++ API; the Swift API has no thread setting).
        .target(
            name: "CMiniVLMExecuTorch",
            dependencies: [
                // backend_xnnpack brings ExecuTorch's threadpool library, whose two functions threads.cpp calls.
                .product(name: "backend_xnnpack", package: "executorch"),
            ],
            path: "Sources/CMiniVLMExecuTorch",
            publicHeadersPath: "include"
        ),
        .target(
            name: "MiniVLMExecuTorch",
            dependencies: [
                "MiniVLM",
                "CMiniVLMExecuTorch",
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "backend_coreml", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
                // int8 builds look their embeddings up with quantized_decomposed::embedding_byte
                .product(name: "kernels_quantized", package: "executorch"),
            ],
            path: "Sources/MiniVLMExecuTorch"
        ),
        .testTarget(
            name: "MiniVLMTests",
            dependencies: ["MiniVLM", "MiniVLMExecuTorch"],
            path: "Tests/MiniVLMTests"
        ),
    ],
    cxxLanguageStandard: .cxx17
)
