/* Reference for scripts/bench/collbench-tcp: MPI_Allreduce (float, sum) timed the way
 * collbench times it (warm-up, barrier, N back-to-back iterations, time averaged over
 * ranks), printed as "bytes time_us algbw_gbs busbw_gbs" per size. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    long min_bytes = argc > 1 ? atol(argv[1]) : 8;
    long max_bytes = argc > 2 ? atol(argv[2]) : 64L << 20;
    int iters = argc > 3 ? atoi(argv[3]) : 20;
    int warmup = argc > 4 ? atoi(argv[4]) : 5;
    float *send = malloc(max_bytes), *recv = malloc(max_bytes);
    for (long i = 0; i < max_bytes / 4; i++) send[i] = (float)((rank + 1) * (i % 13 + 1) % 17);
    for (long bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
        int count = (int)(bytes / 4);
        for (int i = 0; i < warmup; i++) MPI_Allreduce(send, recv, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        for (int i = 0; i < iters; i++) MPI_Allreduce(send, recv, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double mine = (MPI_Wtime() - start) / iters, sum;
        MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double us = sum / world * 1e6, algbw = bytes / (us * 1e-6) / 1e9;
        if (rank == 0) printf("%ld %.2f %.6f %.6f\n", bytes, us, algbw, algbw * 2.0 * (world - 1) / world);
        fflush(stdout);
    }
    free(send);
    free(recv);
    MPI_Finalize();
    return 0;
}
