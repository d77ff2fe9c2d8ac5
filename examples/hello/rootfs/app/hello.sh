#!/bin/sh
echo "hello from a strata layer"
