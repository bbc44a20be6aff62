#if FUZZING
/// libFuzzer's driver for a fuzz target built by Fuzz/run.sh. SwiftPM links an executable's entry
/// point under the name `MODULE_main`, so each target defines that (with `@_cdecl`) under
/// `FUZZING` and calls ``main(_:_:_:)``, which hands libFuzzer its arguments and the body.
public enum FuzzDriver {
    /// The target's body, for the C callback libFuzzer calls (which cannot capture).
    nonisolated(unsafe) static var body: (([UInt8]) -> Void)?

    public static func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
                            _ body: @escaping ([UInt8]) -> Void) -> CInt {
        Self.body = body
        var count = argc
        var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
        return LLVMFuzzerRunDriver(&count, &arguments) { bytes, size in
            FuzzDriver.body?(size == 0 ? [] : Array(UnsafeBufferPointer(start: bytes, count: size)))
            return 0
        }
    }
}

/// What libFuzzer's own `main` (pulled in by -sanitize=fuzzer, unused: SwiftPM's entry point
/// wins) needs to link; it runs the body like the driver's callback.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    FuzzDriver.body?(count == 0 ? [] : Array(UnsafeBufferPointer(start: bytes, count: count)))
    return 0
}

/// libFuzzer's entry point (FuzzerDriver.cpp), present when built with -sanitize=fuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt
#endif
