// Swift wrappers over the native core's C ABI (sdk/native/include/minivlm/minivlm.h, via CMiniVLM).
// Each non-OK status becomes a thrown MiniVLMError carrying mvlm_last_error(); handles are freed in deinit.

import CMiniVLM
import Foundation

/// The one error type of the package; `status` is the core's mvlm_status (or a Swift-side code).
public struct MiniVLMError: Error, CustomStringConvertible {
    public enum Kind: Int32 {
        case invalidArgument = 1, badInput = 2, badFile = 3, ioError = 4, bufferTooSmall = 5
        case callbackFailed = 6, outOfMemory = 7, internalError = 8
        case config = 100, runtime = 101
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    init(status: mvlm_status) {
        self.kind = Kind(rawValue: status) ?? .internalError
        self.message = String(cString: mvlm_status_name(status)) + ": " + String(cString: mvlm_last_error())
    }

    public var description: String { message }
}

@inline(__always)
func check(_ status: mvlm_status) throws {
    if status != 0 { throw MiniVLMError(status: status) }
}

/// Calls `body` with the bytes of `data` as a C pointer that is never NULL (the core rejects NULL even for
/// zero bytes, and an empty `Data` has no base address).
func withBytes<R>(_ data: Data, _ body: (UnsafePointer<CChar>, Int) throws -> R) rethrows -> R {
    if data.isEmpty { return try "".withCString { try body($0, 0) } }
    return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
        try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
    }
}

/// A malloc'd C string from a CMiniVLM helper, as a Swift string.
func takeString(_ call: (UnsafeMutablePointer<mvlm_status>) -> UnsafeMutablePointer<CChar>?) throws -> String {
    var status: mvlm_status = 0
    guard let pointer = call(&status) else { throw MiniVLMError(status: status) }
    defer { cmvlm_free(pointer) }
    return String(cString: pointer)
}

/// A build's manifest.json as the core reads and checks it.
public final class Manifest {
    let handle: OpaquePointer

    /// `url` is manifest.json or the build folder holding it.
    public init(contentsOf url: URL) throws {
        var h: OpaquePointer?
        try check(mvlm_manifest_load(url.path, &h))
        handle = h!
    }

    /// From bytes; `folder` resolves relative file names.
    public init(data: Data, folder: URL?) throws {
        var h: OpaquePointer?
        try withBytes(data) { bytes, count in try check(mvlm_manifest_parse(bytes, count, folder?.path, &h)) }
        handle = h!
    }

    deinit { mvlm_manifest_free(handle) }

    /// "vocab", "vocabularies" or a graph name -> the file in the build folder.
    public func file(_ which: String) throws -> URL {
        URL(fileURLWithPath: try takeString { cmvlm_manifest_file(handle, which, $0) })
    }

    public func classNames() throws -> [String] {
        var count: Int32 = 0
        try check(mvlm_manifest_num_classes(handle, &count))
        return try (0..<count).map { i in try takeString { cmvlm_manifest_class_name(handle, i, $0) } }
    }

    /// The host-step constants, checked by the core.
    public func config() throws -> mvlm_config {
        var c = mvlm_config()
        try check(mvlm_manifest_config(handle, &c))
        try check(mvlm_config_check(&c))
        return c
    }
}

/// BERT uncased WordPiece, run by the core (identical to python_ref/tokenizer.py).
public final class Tokenizer {
    let handle: OpaquePointer

    public init(vocab url: URL) throws {
        var h: OpaquePointer?
        try check(mvlm_tokenizer_load(url.path, &h))
        handle = h!
    }

    /// From the bytes of a vocab.txt.
    public init(vocabData: Data) throws {
        var h: OpaquePointer?
        try withBytes(vocabData) { bytes, count in try check(mvlm_tokenizer_parse(bytes, count, &h)) }
        handle = h!
    }

    deinit { mvlm_tokenizer_free(handle) }

    public func encode(_ text: String) throws -> [Int64] { try encode(utf8: Data(text.utf8)) }

    /// Raw UTF-8 bytes; malformed UTF-8 throws `.badInput` from the core.
    public func encode(utf8 data: Data) throws -> [Int64] {
        try withBytes(data) { bytes, length -> [Int64] in
            var status: mvlm_status = 0
            var count = 0
            guard let ids = cmvlm_tokenize(handle, bytes, length, &count, &status) else { throw MiniVLMError(status: status) }
            defer { cmvlm_free(ids) }
            return Array(UnsafeBufferPointer(start: ids, count: count))
        }
    }

    public func decode(_ ids: [Int64]) throws -> String {
        try ids.withUnsafeBufferPointer { buffer in
            try takeString { cmvlm_detokenize(handle, buffer.baseAddress, buffer.count, $0) }
        }
    }
}
