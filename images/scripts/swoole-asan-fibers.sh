#!/bin/sh
# Make Swoole tell AddressSanitizer about its coroutine stack switches (ASan's fiber API).
# Without it ASan keeps assuming the thread's own stack: its frame-pointer unwinder stops at the
# first frame on a coroutine stack (allocations in a coroutine handler get one frame) and it warns
# about "stack switches". Swoole registers its stacks with Valgrind only.
# usage: swoole-asan-fibers.sh SWOOLE_SOURCE_DIR
# Edits src/coroutine/context.cc in place: three one-line hooks and the helpers they call. A
# source without the expected functions is left as it is, said in the build log; a source where
# only some hooks fit fails the build rather than switch stacks half-reported.
set -eu
file="$1/src/coroutine/context.cc"
helpers=$(mktemp)
cat > "$helpers" <<'EOF'
// ---- added by asanlab (images/scripts/swoole-asan-fibers.sh): coroutine switches reported to ASan
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASANLAB_ASAN_FIBERS 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ASANLAB_ASAN_FIBERS 1
#endif
#ifdef ASANLAB_ASAN_FIBERS
#include <sanitizer/common_interface_defs.h>
#include <vector>
namespace asanlab_fiber {
struct Stack {
    const void *bottom;
    size_t size;
};
// The stacks that resumed the coroutines running now, innermost last: a coroutine always yields
// back to the context that resumed it, so they nest.
static thread_local std::vector<Stack> callers;
// First instructions on a new coroutine stack, and again after each resume.
static inline void arrived(void *fake_stack) {
    Stack from{nullptr, 0};
    __sanitizer_finish_switch_fiber(fake_stack, &from.bottom, &from.size);
    callers.push_back(from);
}
struct SwapIn {  // around the jump into a coroutine: back here when it yields or ends
    void *fake_stack = nullptr;
    SwapIn(const void *bottom, size_t size) {
        __sanitizer_start_switch_fiber(&fake_stack, bottom, size);
    }
    ~SwapIn() {
        __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
    }
};
struct SwapOut {  // around the jump out of a coroutine: back here when resumed, never if it ended
    void *fake_stack = nullptr;
    bool known;
    explicit SwapOut(bool ending) : known(!callers.empty()) {
        if (known) {
            Stack to = callers.back();
            callers.pop_back();
            __sanitizer_start_switch_fiber(ending ? nullptr : &fake_stack, to.bottom, to.size);
        }
    }
    ~SwapOut() {
        if (known) {
            arrived(fake_stack);
        }
    }
};
}  // namespace asanlab_fiber
#define ASANLAB_FIBER_ARRIVED() asanlab_fiber::arrived(nullptr)
#define ASANLAB_FIBER_SWAP_IN() asanlab_fiber::SwapIn asanlab_fiber_guard(stack_, stack_size_)
#define ASANLAB_FIBER_SWAP_OUT() asanlab_fiber::SwapOut asanlab_fiber_guard(end_)
#else
#define ASANLAB_FIBER_ARRIVED() ((void) 0)
#define ASANLAB_FIBER_SWAP_IN() ((void) 0)
#define ASANLAB_FIBER_SWAP_OUT() ((void) 0)
#endif
// ---- end of asanlab's addition
EOF

out=$(mktemp)
awk -v helpers="$helpers" '
  { print }
  /^#include "swoole_coroutine_context.h"/ && !n_inc { while ((getline line < helpers) > 0) print line; n_inc++; next }
  /^bool Context::swap_in\(\) \{$/ { print "    ASANLAB_FIBER_SWAP_IN();"; n_in++; next }
  /^bool Context::swap_out\(\) \{$/ { print "    ASANLAB_FIBER_SWAP_OUT();"; n_out++; next }
  /^void Context::context_func\(.*\) \{$/ { print "    ASANLAB_FIBER_ARRIVED();"; n_entry++; next }
  END { printf "%d %d %d %d\n", n_inc, n_in, n_out, n_entry > "/dev/stderr" }
' "$file" > "$out" 2> "$out.counts"
counts=$(cat "$out.counts")
rm -f "$helpers" "$out.counts"
case "$counts" in
  "1 1 1 1")
    mv "$out" "$file"
    echo "asanlab: coroutine stack switches reported to AddressSanitizer ($file)" ;;
  "0 0 0 0"|"1 0 0 0")
    rm -f "$out"
    echo "asanlab: NOTE: $file has none of the coroutine switch functions asanlab hooks; left as it is:" \
         "ASan's stacks of allocations in coroutines stop at the coroutine's first frame" ;;
  *)
    rm -f "$out"
    echo "asanlab: $file: only some coroutine switch hooks fit (include, swap_in, swap_out, entry: $counts);" \
         "refusing to build a Swoole whose stack switches ASan would half know" >&2
    exit 1 ;;
esac
