// Decisions about a build folder before anything runs, made by the native core (sdk/native, minivlm.h "Build
// checks") so that iOS and Android decide alike: verification, the runtime plan, the photo decode size and the
// compiled Core ML cache path. Every failure throws a MiniVLMError with a one-line message.

import CMiniVLM
import Foundation

/// The Core ML compute units a user picks; `.auto` follows the build (its manifest's `compute_units`).
public enum ComputeUnitsChoice: String {
    case auto, all, cpuOnly = "cpu_only", cpuAndGPU = "cpu_and_gpu", cpuAndNeuralEngine = "cpu_and_ne"
}

/// What the user asked for; `threads` 0 = auto; `availableCores` is the device's (ProcessInfo.activeProcessorCount).
public struct RuntimeRequest {
    public var computeUnits: ComputeUnitsChoice
    public var threads: Int
    public var availableCores: Int

    public init(computeUnits: ComputeUnitsChoice = .auto, threads: Int = 0,
                availableCores: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.computeUnits = computeUnits
        self.threads = threads
        self.availableCores = availableCores
    }
}

/// What the app applies and shows. `computeUnits` is in the backend runner's own names (Core ML: all, cpu_only,
/// cpu_and_gpu, cpu_and_ne; Core AI: default, cpu_only, gpu, neural_engine; "" for ExecuTorch); `threads` is the
/// ExecuTorch CPU thread count (0 for Core ML and Core AI, which schedule their own); `note` says what was changed.
public struct RuntimePlan {
    public let backend: String
    public let computeUnits: String
    public let threads: Int
    public let note: String
}

public enum BuildChecks {
    /// Verifies the build for `runtime` ("coreml", "coreai", "executorch"): the manifest's own checksum, every listed
    /// file's sha256, the target, and `runtimeVersion` (nil: unchecked) against the exporter's version. Hashes every
    /// byte of the build (minivlm.h gives the cost): `Backends.open` calls it at every load.
    public static func verify(folder: URL, runtime: String, runtimeVersion: String?) throws {
        try check(mvlm_build_verify(folder.path, runtime, runtimeVersion))
    }

    /// The plan iOS can honour for the build (platform "ios"); a tflite build, or compute units an ExecuTorch
    /// XNNPACK build cannot use, are refused.
    public static func plan(folder: URL, request: RuntimeRequest) throws -> RuntimePlan {
        guard let threads = Int32(exactly: request.threads), let cores = Int32(exactly: request.availableCores) else {
            throw MiniVLMError(.invalidArgument, "threads \(request.threads) or cores \(request.availableCores) out of range")
        }
        return try withManifest(folder) { manifest in
            var plan = mvlm_runtime_plan()
            try "ios".withCString { platform in
                try request.computeUnits.rawValue.withCString { units in
                    var r = mvlm_runtime_request(platform: platform, accelerator: nil, compute_units: units,
                                                 threads: threads, available_cores: cores)
                    try check(mvlm_plan_runtime(manifest, &r, &plan))
                }
            }
            return RuntimePlan(backend: text(of: &plan.backend), computeUnits: text(of: &plan.compute_units),
                               threads: Int(plan.threads), note: text(of: &plan.note))
        }
    }

    /// The longest side to decode a `width` x `height` photo to (kCGImageSourceThumbnailMaxPixelSize), keeping
    /// every pixel preprocessing uses.
    public static func decodeMaxSide(folder: URL, width: Int, height: Int) throws -> Int {
        guard let w = Int32(exactly: width), let h = Int32(exactly: height) else {
            throw MiniVLMError(.invalidArgument, "image is \(width)x\(height), too large")
        }
        return try withManifest(folder) { manifest in
            var sample: Int32 = 0
            var side: Int32 = 0
            try check(mvlm_decode_size(manifest, w, h, &sample, &side))
            return Int(side)
        }
    }

    /// `<caches>/minivlm-compiled/<manifest sha256 prefix>/<graph>.mlmodelc`: where the compiled graph is kept, so
    /// that a changed build never reuses a stale compilation.
    public static func compiledCachePath(folder: URL, caches: URL, graph: String) throws -> URL {
        try withManifest(folder) { manifest in
            URL(fileURLWithPath: try takeString { cmvlm_compiled_cache_path(manifest, caches.path, graph, $0) })
        }
    }

    /// The build's manifest (any model family) for the duration of `body`.
    private static func withManifest<T>(_ folder: URL, _ body: (OpaquePointer) throws -> T) throws -> T {
        var handle: OpaquePointer?
        try check(mvlm_build_manifest_load(folder.path, &handle))
        defer { mvlm_manifest_free(handle) }
        return try body(handle!)
    }

    /// A NUL-terminated C char array (imported as a tuple) as a String.
    private static func text<T>(of field: inout T) -> String {
        withUnsafeBytes(of: &field) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }
}
