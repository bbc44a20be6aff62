"""Shared by the test servers: a server started by a test never outlives it."""
import os, signal, threading, time


def _exit_with_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def bind_to_parent():
    """Let SIGTERM end this process (a parent's blocked signal mask is inherited) and exit when
    the parent (the test runner, or the e2e script) goes away, so no server is left orphaned."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
