"""Shared pieces of the instance generators (generate.py, generate_bwd.py): the X-macro rows of a list header,
one guarded launcher, and the .cu file that holds launchers. Imported, never run."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def xmacro_rows(dims, dtypes):
    """`X(head_dim, dtype_name, is_bf16) \\` for every head dim and (dtype_name, "true"/"false") pair."""
    return ["    X(%d, %s, %d) \\" % (d, n, b == "true") for d in dims for n, b in dtypes]


def launcher(fn, params, built, d, body):
    """`cudaError_t fn(params)`: the body's lines when the guard macro built(d) is true, else cudaErrorNotSupported
    (a head dim left out of a subset build answers "not supported", never crashes)."""
    return ("cudaError_t %s(%s) {\n#if %s(%d)\n" % (fn, params, built, d) + "".join("    %s\n" % l for l in body) +
            "#else\n    return cudaErrorNotSupported;\n#endif\n}\n")


def write_cu(name, header, includes, launchers):
    """Writes src/cuda/gen/<name>: the generated-file header, the includes, then the launchers in namespace fk_cuda."""
    src = (header + "".join('#include "%s"\n' % i for i in includes) + "\nnamespace fk_cuda {\n" + "".join(launchers) +
           "} // namespace fk_cuda\n")
    with open(os.path.join(HERE, name), "w") as f:
        f.write(src)


def write_text(name, lines):
    """Writes src/cuda/gen/<name>: the lines joined by newlines (a list header)."""
    with open(os.path.join(HERE, name), "w") as f:
        f.write("\n".join(lines))
