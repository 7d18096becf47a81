// Opening a build: verify its manifest, plan its runtime (the user's choice against what the build allows),
// choose the runner from the plan, open the pipeline of its model family, and time the load; and getting pixels
// out of a photo, downscaled as it is decoded.

import CMiniVLM
import Foundation
#if canImport(CoreGraphics)
import CoreGraphics
#endif
#if canImport(ImageIO)
import ImageIO
#endif

/// What the MiniVLMExecuTorch product hands Backends (`ExecuTorchBackend.register()`): this package's MiniVLM
/// library never links ExecuTorch itself.
public struct ExecuTorchHooks {
    /// The linked ExecuTorch runtime's version, checked against the build's exporter at load.
    public let runtimeVersion: String
    /// Resizes ExecuTorch's thread pool (> 0; 0 keeps it) and returns the size in effect.
    public let setThreads: (Int) -> Int
    public let makeRunner: (_ folder: URL, _ name: String, _ spec: GraphSpec, _ weightsFile: String?) throws -> GraphRunner

    public init(runtimeVersion: String, setThreads: @escaping (Int) -> Int,
                makeRunner: @escaping (URL, String, GraphSpec, String?) throws -> GraphRunner) {
        self.runtimeVersion = runtimeVersion
        self.setThreads = setThreads
        self.makeRunner = makeRunner
    }
}

/// What a user may ask of the runtime: Core ML / Core AI compute units and ExecuTorch threads (0: the plan's).
public struct RuntimeOptions: Equatable {
    public var computeUnits: ComputeUnitsChoice
    public var threads: Int

    public init(computeUnits: ComputeUnitsChoice = .auto, threads: Int = 0) {
        self.computeUnits = computeUnits
        self.threads = threads
    }
}

/// A loaded model of either family.
public enum LoadedModel {
    case miniVLM(Pipeline)
    case efficientVLM(EfficientVLMPipeline)
}

/// An opened build: its model, the runtime plan applied to it and how long loading took.
public struct OpenedBuild {
    public let folder: URL
    /// "minivlm" or "efficientvlm" (manifest "family").
    public let family: String
    public let target: String
    public let precision: String
    public let plan: RuntimePlan
    /// ExecuTorch's thread pool size after the plan was applied; nil for Core ML and Core AI.
    public let threadsInEffect: Int?
    public let model: LoadedModel
    /// Verifying the manifest, planning, and loading (Core ML: compiling on a first launch) every graph.
    public let loadMs: Double

    /// One line: what runs the graphs and how, as applied.
    public var planDescription: String {
        var parts = [plan.backend]
        switch plan.backend {
        case "executorch":
            parts.append("\(threadsInEffect ?? plan.threads) threads")
        default:
            parts.append("compute units \(plan.computeUnits)")
        }
        if !plan.note.isEmpty { parts.append(plan.note) }
        return parts.joined(separator: " · ")
    }

    /// Runs the model once on a plain grey image and returns the wall time in milliseconds: the first run pays for
    /// work the runtimes defer (Core ML / Core AI specialization for the device, ExecuTorch's first allocations).
    public func warmUp() throws -> Double {
        let side = 64
        let image = PixelImage(pixels: Data(repeating: 128, count: side * side * 4), width: side, height: side,
                               rowBytes: side * 4, format: Int32(MVLM_PIXELS_RGBA8))
        let start = DispatchTime.now().uptimeNanoseconds
        switch model {
        case .miniVLM(let pipeline):
            _ = try pipeline.caption(try pipeline.analyze(image))
        case .efficientVLM(let pipeline):
            _ = try pipeline.caption(try pipeline.encode(image).0)
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }
}

public enum Backends {
    private static let registry = Registry()

    /// Lets `open` run executorch builds (ExecuTorchBackend.register() of the MiniVLMExecuTorch product).
    public static func register(executorch hooks: ExecuTorchHooks) {
        registry.set(hooks)
    }

    /// The registered ExecuTorch runtime, or nil when the app links only MiniVLM.
    public static var executorch: ExecuTorchHooks? { registry.get() }

    /// The runner factory of a runtime plan: "coreml", "coreai" and "executorch" builds run on iOS, a "tflite" build
    /// is refused. An ExecuTorch build's graphs read their constants from its `weightsFile`; a Core ML build is
    /// compiled into `caches`.
    public static func backend(for target: String, plan: RuntimePlan, folder: URL, weightsFile: String? = nil,
                               caches: URL) throws -> GraphBackend {
        switch target {
        case "coreml":
            #if canImport(CoreML)
            guard #available(iOS 18.0, macOS 15.0, *) else {
                throw MiniVLMError(.config, "a Core ML build is one multifunction model, which needs iOS 18 or macOS 15; use an ExecuTorch build on this system")
            }
            let units = try CoreMLRunner.computeUnits(plan.computeUnits)
            let cache = CoreMLCompiledCache(folder: folder, caches: caches)
            return { folder, name, spec in
                try CoreMLRunner(folder: folder, name: name, spec: spec, computeUnits: units, cache: cache)
            }
            #else
            throw MiniVLMError(.config, "Core ML is not available on this platform")
            #endif
        case "coreai":
            #if canImport(CoreAI)
            guard #available(iOS 27.0, macOS 27.0, *) else {
                throw MiniVLMError(.config, "a Core AI build needs iOS 27 or macOS 27; use a Core ML or ExecuTorch build on this system")
            }
            let models = try CoreAIModels(computeUnits: plan.computeUnits)  // one load of model.aimodel for every graph
            return { folder, name, spec in try CoreAIRunner(models: models, folder: folder, name: name, spec: spec) }
            #else
            throw MiniVLMError(.config, "this build of MiniVLM was compiled without Core AI (it needs the iOS 27 / macOS 27 SDK); use a Core ML or ExecuTorch build")
            #endif
        case "executorch":
            guard let hooks = registry.get() else {
                throw MiniVLMError(.config, "this app was built without ExecuTorch: link the MiniVLMExecuTorch product and call ExecuTorchBackend.register(), or use a Core ML build")
            }
            return { folder, name, spec in try hooks.makeRunner(folder, name, spec, weightsFile) }
        case "tflite":
            throw MiniVLMError(.config, "a tflite build runs on Android, not iOS; convert with --target coreml, coreai or executorch")
        default:
            throw MiniVLMError(.config, "unknown build target '\(target)'; iOS runs coreml, coreai and executorch builds")
        }
    }

    /// Opens a build folder (e.g. the app bundle's "minivlm" folder): verifies its manifest and files against this
    /// runtime, plans the runtime from `options` and the build, and loads every graph of its model family.
    /// `caches` is where a Core ML build is compiled (nil: the app's Caches folder).
    public static func open(folder: URL, options: RuntimeOptions = RuntimeOptions(), caches: URL? = nil) throws -> OpenedBuild {
        let start = DispatchTime.now().uptimeNanoseconds
        let head = try ManifestHead(folder: folder)
        let hooks = registry.get()
        try BuildChecks.verify(folder: folder, runtime: head.target == "tflite" ? "litert" : head.target,
                               runtimeVersion: head.target == "executorch" ? hooks?.runtimeVersion : nil)
        let request = RuntimeRequest(computeUnits: options.computeUnits, threads: options.threads,
                                     availableCores: ProcessInfo.processInfo.activeProcessorCount)
        let plan = try BuildChecks.plan(folder: folder, request: request)
        let runners = try Self.backend(for: plan.backend, plan: plan, folder: folder, weightsFile: head.weightsFile,
                                       caches: try caches ?? Self.cachesFolder())
        // ExecuTorch's one thread pool is resized before any program loads, never while one runs.
        let threads = plan.backend == "executorch" ? hooks?.setThreads(plan.threads) : nil
        let family = try buildFamily(folder: folder)
        let model: LoadedModel
        switch family {
        case "minivlm":
            let pipeline = try Pipeline(folder: folder, backend: runners)
            try pipeline.loadGraphs()
            model = .miniVLM(pipeline)
        case "efficientvlm":
            let pipeline = try EfficientVLMPipeline(folder: folder, backend: runners)
            try pipeline.loadGraphs()
            model = .efficientVLM(pipeline)
        default:
            throw MiniVLMError(.config, "the build's family is '\(family)'; this app runs minivlm and efficientvlm builds")
        }
        let loadMs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        return OpenedBuild(folder: folder, family: family, target: head.target, precision: head.precision, plan: plan,
                           threadsInEffect: threads, model: model, loadMs: loadMs)
    }

    /// The app's Caches folder.
    public static func cachesFolder() throws -> URL {
        do {
            return try FileManager.default.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        } catch {
            throw MiniVLMError(.ioError, "no Caches folder: \(error.localizedDescription)")
        }
    }
}

/// The registered ExecuTorch hooks, set once at startup and read from the pipeline's queue.
private final class Registry {
    private let lock = NSLock()
    private var hooks: ExecuTorchHooks?

    func set(_ value: ExecuTorchHooks) {
        lock.lock()
        hooks = value
        lock.unlock()
    }

    func get() -> ExecuTorchHooks? {
        lock.lock()
        defer { lock.unlock() }
        return hooks
    }
}

/// The manifest entries needed before a family's pipeline reads the rest (both families have them).
struct ManifestHead: Decodable {
    let target: String
    let precision: String
    let weightsFile: String?

    enum CodingKeys: String, CodingKey {
        case target, precision
        case weightsFile = "weights_file"
    }

    init(folder: URL) throws {
        let url = folder.appendingPathComponent("manifest.json")
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw MiniVLMError(.ioError, "cannot read \(url.path): \(error.localizedDescription)")
        }
        do {
            self = try JSONDecoder().decode(ManifestHead.self, from: data)
        } catch {
            throw MiniVLMError(.badFile, "\(url.path) has no target or precision: \(error.localizedDescription)")
        }
    }
}

#if canImport(CoreGraphics)
extension PixelImage {
    /// Draws `image` into an RGBA8 buffer (sRGB, alpha ignored by the core), upright as given.
    public init(cgImage image: CGImage) throws {
        let width = image.width, height = image.height
        guard width > 0, height > 0 else { throw MiniVLMError(.badInput, "image is \(width)x\(height)") }
        var data = Data(count: width * height * 4)
        let drawn = data.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) -> Bool in
            guard let context = CGContext(
                data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8, bytesPerRow: width * 4,
                space: CGColorSpace(name: CGColorSpace.sRGB)!, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue
            ) else { return false }
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        guard drawn else { throw MiniVLMError(.badInput, "cannot draw a \(width)x\(height) image into RGBA8") }
        self.init(pixels: data, width: width, height: height, rowBytes: width * 4, format: Int32(MVLM_PIXELS_RGBA8))
    }
}
#endif

#if canImport(ImageIO)
/// Photos decoded at the size the model needs, not the sensor's: ImageIO decodes straight to a thumbnail whose
/// longest side is the build's `BuildChecks.decodeMaxSide`, with the EXIF orientation applied, so a 48-megapixel
/// photo never sits in memory at full size.
public enum PhotoDecoding {
    /// The upright image in `data` (JPEG, HEIC, PNG, ...), its longest side at most what `folder`'s build needs.
    public static func downscaled(_ data: Data, for folder: URL) throws -> CGImage {
        let noCache = [kCGImageSourceShouldCache: false] as CFDictionary
        guard let source = CGImageSourceCreateWithData(data as CFData, noCache), CGImageSourceGetCount(source) > 0 else {
            throw MiniVLMError(.badInput, "the photo (\(data.count) bytes) is not an image ImageIO can read")
        }
        let properties = CGImageSourceCopyPropertiesAtIndex(source, 0, noCache) as? [CFString: Any] ?? [:]
        guard let width = (properties[kCGImagePropertyPixelWidth] as? NSNumber)?.intValue,
              let height = (properties[kCGImagePropertyPixelHeight] as? NSNumber)?.intValue, width > 0, height > 0 else {
            throw MiniVLMError(.badInput, "the photo has no pixel size")
        }
        // EXIF orientations 5-8 turn the image by 90 degrees: the upright image is height x width.
        let orientation = (properties[kCGImagePropertyOrientation] as? NSNumber)?.intValue ?? 1
        let (uprightWidth, uprightHeight) = orientation >= 5 ? (height, width) : (width, height)
        let maxSide = try BuildChecks.decodeMaxSide(folder: folder, width: uprightWidth, height: uprightHeight)
        let options = [
            kCGImageSourceCreateThumbnailFromImageAlways: true,
            kCGImageSourceCreateThumbnailWithTransform: true,
            kCGImageSourceThumbnailMaxPixelSize: max(1, min(maxSide, max(uprightWidth, uprightHeight))),
            kCGImageSourceShouldCacheImmediately: true,
        ] as [CFString: Any] as CFDictionary
        guard let image = CGImageSourceCreateThumbnailAtIndex(source, 0, options) else {
            throw MiniVLMError(.badInput, "ImageIO cannot decode the \(width)x\(height) photo")
        }
        return image
    }
}
#endif
