// The journal's lock (src/ledger/lock.ts): an exclusive OFD lock (fcntl F_OFD_SETLK; flock(2) where
// the kernel has no OFD locks) on the whole of `<journal>.lock`. The kernel drops it when its open
// file description goes (the owner closed it or died), and it holds against every other open file
// description, whatever PID namespace its process is in, and within this process too.
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

// lockFile(path) -> fd holding the lock, or -1 if another open file description holds it.
Napi::Value LockFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    errors::Code(env, "ERR_INVALID_ARG", "lockFile(path)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    errors::Sys(env, errno, "open", path.c_str()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    errors::Code(env, "ERR_JOURNAL_OPEN", path + " is not a regular file").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  int rc = fcntl(fd, F_OFD_SETLK, &fl);
  if (rc != 0 && errno == EINVAL) rc = flock(fd, LOCK_EX | LOCK_NB);  // a kernel before 3.15
  if (rc != 0) {
    int e = errno;
    close(fd);
    if (e == EAGAIN || e == EACCES || e == EWOULDBLOCK) return Napi::Number::New(env, -1);
    errors::Sys(env, e, "fcntl", path.c_str()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
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
