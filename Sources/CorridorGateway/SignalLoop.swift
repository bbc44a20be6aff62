import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Gateway {
    /// Serves until SIGTERM or SIGINT: reloads on SIGHUP and when the config file changes
    /// (checked every `watchInterval`), reopens the access log file on SIGUSR1 (log rotation),
    /// then drains and returns.
    public func runUntilSignalled(watchInterval: Duration = .seconds(1)) async {
        enum Event: Sendable { case reload, reopenLog, stop(Int32) }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        var sources: [any DispatchSourceSignal] = []
        for signo in [SIGHUP, SIGUSR1, SIGTERM, SIGINT] {
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                switch signo {
                case SIGHUP: continuation.yield(.reload)
                case SIGUSR1: continuation.yield(.reopenLog)
                default: continuation.yield(.stop(signo))
                }
            }
            source.resume()
            sources.append(source)
        }
        let watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: watchInterval)
                if Task.isCancelled { break }
                self.reloadIfChanged()
            }
        }
        for await event in events {
            switch event {
            case .reload:
                reload(reason: "SIGHUP")
            case .reopenLog:
                proxy.accessLog.reopen()
            case .stop(let signo):
                logger.info("stopping", metadata: ["signal": "\(signo == SIGTERM ? "SIGTERM" : "SIGINT")"])
                continuation.finish()
            }
        }
        watcher.cancel()
        await shutdown()
        for source in sources { source.cancel() }
    }
}
