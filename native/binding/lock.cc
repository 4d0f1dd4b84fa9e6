// The journal's lock (src/ledger/lock.ts): an exclusive OFD lock (fcntl F_OFD_SETLK; flock(2) where
// the kernel has no OFD locks) on the whole of `<journal>.lock`. The kernel drops it when its open
// file description goes (the owner closed it or died), and it holds against every other open file
// description, whatever PID namespace its process is in, and within this process too. A holder
// removes the file before it lets go; a taker checks, once locked, that the path still names the
// file it locked (else it locked a removed file: it tries again).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "binding/binding.h"
#include "binding/errors.h"

namespace ras::binding {

namespace {

// Tries once: open (creating it), lock, and check that the path still names the file locked (a
// holder that releases removes the file while it holds the lock; a lock on the removed file is no
// lock). 1: locked (*fd); 0: another holds it; -1: the file went meanwhile, try again; -2: errno.
int TryLock(const std::string& path, int* out, const char** syscall) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    *syscall = "open";
    return -2;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    errno = EINVAL;
    *syscall = "fstat";
    return -2;
  }
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  int rc = fcntl(fd, F_OFD_SETLK, &fl);
  if (rc != 0 && errno == EINVAL) rc = flock(fd, LOCK_EX | LOCK_NB);  // a kernel before 3.15
  if (rc != 0) {
    int e = errno;
    close(fd);
    errno = e;
    *syscall = "fcntl";
    return (e == EAGAIN || e == EACCES || e == EWOULDBLOCK) ? 0 : -2;
  }
  struct stat now;
  if (stat(path.c_str(), &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino) {
    close(fd);
    return -1;
  }
  *out = fd;
  return 1;
}

// lockFile(path) -> fd holding the lock, or -1 if another open file description holds it.
Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    errors::Code(env, "ERR_INVALID_ARG", "lockFile(path)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  for (int attempt = 0; attempt < 100; attempt++) {
    int fd = -1;
    const char* syscall = nullptr;
    int r = TryLock(path, &fd, &syscall);
    if (r == 1) return Napi::Number::New(env, fd);
    if (r == 0) return Napi::Number::New(env, -1);
    if (r == -2) {
      errors::Sys(env, errno, syscall, path.c_str()).ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, -1);  // removed under us 100 times: somebody else keeps taking it
}

// unlockFile(fd): closing the fd drops the lock.
Napi::Value UnlockFile(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) {
    int fd = info[0].As<Napi::Number>().Int32Value();
    if (fd >= 0) close(fd);
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterLock(Napi::Env env, Napi::Object exports) {
  exports.Set("lockFile", Napi::Function::New(env, LockFile));
  exports.Set("unlockFile", Napi::Function::New(env, UnlockFile));
}

}  // namespace ras::binding
