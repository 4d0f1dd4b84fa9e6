#include "mce_delivery.h"

#include <algorithm>

namespace ras_vmm {

void Delivery::Init(const mce::Model& model, uint64_t mcg_cap, int vcpus, Kick kick, Sink sink, Ops ops) {
  ops_ = std::move(ops);
  model_ = model;
  mcg_cap_ = mcg_cap;
  kick_ = std::move(kick);
  sink_ = std::move(sink);
  vcpu_.clear();
  for (int k = 0; k < vcpus; k++) vcpu_.push_back(std::make_unique<PerVcpu>());
}

bool Delivery::FirstAo(uint64_t gpa) {
  std::lock_guard<std::mutex> lock(mu_);
  return told_ao_.insert(gpa & ~0xfffull).second;
}

size_t Delivery::Deferred(int i) const { return vcpu_[i]->deferred.size(); }

std::vector<uint64_t> Delivery::DeferredFrames(int i) const {
  std::vector<uint64_t> out;
  for (const Pending& p : vcpu_[i]->deferred) out.push_back(p.gpa);
  return out;
}

bool Delivery::Attempt(int i, int fd, const Pending& p, bool ar, bool queue_if_deferred) {
  Outcome o;
  o.gpa = p.gpa;
  o.path = p.path;
  o.code = p.code;
  o.whole = p.whole;
  o.ar = ar;
  o.d = mce::Plan(model_, mcg_cap_, ops_.read(fd, mcg_cap_), ar, p.gpa);
  bool done = true;
  switch (o.d.verdict) {
    case mce::kInject:
    case mce::kShutdown:  // KVM turns it into a triple fault, as hardware would shut down
      o.err = ops_.put(fd, o.d.inj);
      break;
    case mce::kDefer:
      done = false;
      if (!queue_if_deferred) return false;  // still waiting in the queue: nothing new to say
      {
        auto& q = vcpu_[i]->deferred;
        if (std::none_of(q.begin(), q.end(), [&](const Pending& x) { return x.gpa == p.gpa; })) q.push_back(p);
        else return false;  // already waiting: no second outcome for it
      }
      break;
    default:
      break;  // kDisabled: KVM would drop it; reported, not counted as delivered
  }
  if (sink_) sink_(i, o);
  if (o.d.verdict == mce::kInject && o.err == 0 && o.d.broadcast) {
    for (size_t k = 0; k < vcpu_.size(); k++) {
      if (static_cast<int>(k) == i) continue;
      vcpu_[k]->pieces.fetch_add(1);
      if (kick_) kick_(static_cast<int>(k));
    }
  }
  return done;
}

void Delivery::Deliver(int i, int fd, uint64_t gpa, bool ar, int path, int code, int whole) {
  Attempt(i, fd, {gpa & ~0xfffull, path, code, whole}, ar, !ar);
}

void Delivery::BeforeRun(int i, int fd) {
  PerVcpu& v = *vcpu_[i];
  for (uint32_t n = v.pieces.exchange(0); n > 0; n--) {
    Outcome o;
    o.piece = true;
    o.d = mce::PlanBroadcastPiece(mcg_cap_, ops_.read(fd, mcg_cap_));
    if (o.d.verdict == mce::kInject) o.err = ops_.put(fd, o.d.inj);
    if (sink_) sink_(i, o);
  }
  if (v.deferred.empty()) return;
  std::vector<Pending> waiting;
  waiting.swap(v.deferred);
  size_t k = 0;
  for (; k < waiting.size(); k++) {
    if (!Attempt(i, fd, waiting[k], false, false)) break;  // still waiting: so do the ones behind it
  }
  for (; k < waiting.size(); k++) v.deferred.push_back(waiting[k]);
}

}  // namespace ras_vmm
