// The `worker` executable. Everything happens in run_cli (host/app/cli.cpp).
#include <unistd.h>

#include "app/cli.hpp"

int main(int argc, char** argv) { return wk::app::run_cli(argc, argv, environ); }
