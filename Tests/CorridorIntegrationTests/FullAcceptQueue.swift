import Foundation

/// A listener on 127.0.0.1 whose accept queue is full (backlog 0, the `filler` connection waiting
/// in it): the kernel drops further SYNs, so a connect to `port` stays in SYN-SENT until the filler
/// is accepted. An upstream that never answers a dial, without leaving loopback.
struct FullAcceptQueue {
    let listener: Int32
    let port: Int
    let filler: Int32

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 0) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard listening else {
            Glibc.close(listener)
            throw TestError.failed("a listener on 127.0.0.1")
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        do {
            filler = try openRawConnection(port: port)
        } catch {
            Glibc.close(listener)
            throw error
        }
        self.listener = listener
        self.port = port
    }

    /// How many connections to the port are in SYN-SENT (`ss`): dials waiting on the queue.
    var dialsInProgress: Int? {
        guard let result = try? runCommand("ss", ["-Htn", "state", "syn-sent", "( dport = :\(port) )"]), result.status == 0 else { return nil }
        return result.stdout.split(separator: "\n").count
    }

    func close() {
        Glibc.close(filler)
        Glibc.close(listener)
    }
}
