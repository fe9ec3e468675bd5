//go:build !purego

#include "textflag.h"

// func xorBlocksAVX2(p []byte, k32 uint32) uint32
//
// 128 bytes (four YMM registers) per iteration, then 32 at a time. The OR of
// the results is folded as a tree so that the accumulator adds one
// dependency per iteration, not four.
TEXT ·xorBlocksAVX2(SB), NOSPLIT, $0-36
	MOVQ         p_base+0(FP), SI
	MOVQ         p_len+8(FP), CX
	MOVL         k32+24(FP), AX
	MOVQ         AX, X0
	VPBROADCASTD X0, Y0
	VPXOR        Y5, Y5, Y5
	CMPQ         CX, $128
	JB           tail32

loop128:
	VPXOR   (SI), Y0, Y1
	VPXOR   32(SI), Y0, Y2
	VPXOR   64(SI), Y0, Y3
	VPXOR   96(SI), Y0, Y4
	VMOVDQU Y1, (SI)
	VMOVDQU Y2, 32(SI)
	VMOVDQU Y3, 64(SI)
	VMOVDQU Y4, 96(SI)
	VPOR    Y1, Y2, Y6
	VPOR    Y3, Y4, Y7
	VPOR    Y6, Y7, Y6
	VPOR    Y6, Y5, Y5
	ADDQ    $128, SI
	SUBQ    $128, CX
	CMPQ    CX, $128
	JAE     loop128

tail32:
	CMPQ    CX, $32
	JB      done
	VPXOR   (SI), Y0, Y1
	VMOVDQU Y1, (SI)
	VPOR    Y1, Y5, Y5
	ADDQ    $32, SI
	SUBQ    $32, CX
	JMP     tail32

done:
	VPMOVMSKB Y5, AX
	VZEROUPPER
	MOVL      AX, ret+32(FP)
	RET

// func xorBlocksSSE2(p []byte, k32 uint32) uint32
//
// 64 bytes (four XMM registers) per iteration, then 32 at a time.
TEXT ·xorBlocksSSE2(SB), NOSPLIT, $0-36
	MOVQ   p_base+0(FP), SI
	MOVQ   p_len+8(FP), CX
	MOVL   k32+24(FP), AX
	MOVQ   AX, X0
	PSHUFD $0, X0, X0
	PXOR   X5, X5
	CMPQ   CX, $64
	JB     tail32

loop64:
	MOVOU (SI), X1
	MOVOU 16(SI), X2
	MOVOU 32(SI), X3
	MOVOU 48(SI), X4
	PXOR  X0, X1
	PXOR  X0, X2
	PXOR  X0, X3
	PXOR  X0, X4
	MOVOU X1, (SI)
	MOVOU X2, 16(SI)
	MOVOU X3, 32(SI)
	MOVOU X4, 48(SI)
	POR   X2, X1
	POR   X4, X3
	POR   X3, X1
	POR   X1, X5
	ADDQ  $64, SI
	SUBQ  $64, CX
	CMPQ  CX, $64
	JAE   loop64

tail32:
	CMPQ  CX, $32
	JB    done
	MOVOU (SI), X1
	MOVOU 16(SI), X2
	PXOR  X0, X1
	PXOR  X0, X2
	MOVOU X1, (SI)
	MOVOU X2, 16(SI)
	POR   X2, X1
	POR   X1, X5
	ADDQ  $32, SI
	SUBQ  $32, CX
	JMP   tail32

done:
	PMOVMSKB X5, AX
	MOVL     AX, ret+32(FP)
	RET
