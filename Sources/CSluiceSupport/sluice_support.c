// Swift cannot issue a prefetch; this module's header gives it one. Nothing to compile here.
#include "sluice_support.h"
