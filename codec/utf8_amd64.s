//go:build !purego

#include "textflag.h"

// UTF-8 validation with AVX2: the "lookup" algorithm of J. Keiser and
// D. Lemire, "Validating UTF-8 In Less Than One Instruction Per Byte"
// (Software: Practice and Experience, 2021), written for pushd from the
// paper's description. Three 16-entry nibble tables classify every pair of
// adjacent bytes; a separate check requires the continuation bytes in third
// and fourth position. Error bits:
//
//	TOO_SHORT 0x01  TOO_LONG 0x02  OVERLONG_3 0x04  TOO_LARGE 0x08
//	SURROGATE 0x10  OVERLONG_2 0x20  TOO_LARGE_1000 = OVERLONG_4 0x40
//	TWO_CONTS 0x80  CARRY = TOO_SHORT|TOO_LONG|TWO_CONTS = 0x83

// byte 1 high nibble: 0-7 TOO_LONG; 8-B TWO_CONTS; C TOO_SHORT|OVERLONG_2;
// D TOO_SHORT; E TOO_SHORT|OVERLONG_3|SURROGATE;
// F TOO_SHORT|TOO_LARGE|TOO_LARGE_1000|OVERLONG_4.
DATA utf8tbl<>+0x00(SB)/8, $0x0202020202020202
DATA utf8tbl<>+0x08(SB)/8, $0x4915012180808080
DATA utf8tbl<>+0x10(SB)/8, $0x0202020202020202
DATA utf8tbl<>+0x18(SB)/8, $0x4915012180808080

// byte 1 low nibble: 0 CARRY|OVERLONG_3|OVERLONG_2|OVERLONG_4; 1 CARRY|OVERLONG_2;
// 2-3 CARRY; 4 CARRY|TOO_LARGE; 5-C CARRY|TOO_LARGE|TOO_LARGE_1000;
// D ...|SURROGATE; E-F CARRY|TOO_LARGE|TOO_LARGE_1000.
DATA utf8tbl<>+0x20(SB)/8, $0xcbcbcb8b8383a3e7
DATA utf8tbl<>+0x28(SB)/8, $0xcbcbdbcbcbcbcbcb
DATA utf8tbl<>+0x30(SB)/8, $0xcbcbcb8b8383a3e7
DATA utf8tbl<>+0x38(SB)/8, $0xcbcbdbcbcbcbcbcb

// byte 2 high nibble: 0-7 TOO_SHORT;
// 8 TOO_LONG|OVERLONG_2|TWO_CONTS|OVERLONG_3|TOO_LARGE_1000|OVERLONG_4;
// 9 TOO_LONG|OVERLONG_2|TWO_CONTS|OVERLONG_3|TOO_LARGE;
// A-B TOO_LONG|OVERLONG_2|TWO_CONTS|SURROGATE|TOO_LARGE; C-F TOO_SHORT.
DATA utf8tbl<>+0x40(SB)/8, $0x0101010101010101
DATA utf8tbl<>+0x48(SB)/8, $0x01010101babaaee6
DATA utf8tbl<>+0x50(SB)/8, $0x0101010101010101
DATA utf8tbl<>+0x58(SB)/8, $0x01010101babaaee6
GLOBL utf8tbl<>(SB), RODATA|NOPTR, $0x60

// A block ends inside a sequence when one of its last three bytes is above
// 0xEF, 0xDF, 0xBF respectively: the saturated difference is then non-zero.
DATA utf8max<>+0x00(SB)/8, $0xffffffffffffffff
DATA utf8max<>+0x08(SB)/8, $0xffffffffffffffff
DATA utf8max<>+0x10(SB)/8, $0xffffffffffffffff
DATA utf8max<>+0x18(SB)/8, $0xbfdfefffffffffff
GLOBL utf8max<>(SB), RODATA|NOPTR, $0x20

// UTF8_BLOCK checks the 32 bytes in Y0, given the previous 32 in Y15, ORs
// the error bits into Y14 and moves Y0 to Y15.
// Constants: Y13/Y12/Y11 tables, Y10 0x0f, Y9 0x60, Y8 0x70, Y7 0x80.
// Steps: Y1 = previous high lane : this low lane; Y2/Y3/Y4 = the input
// shifted right by 1/2/3 bytes (prev1..prev3); Y5 = table1[prev1 >> 4] &
// table2[prev1 & 15] & table3[input >> 4] (special cases); Y3 = the bytes
// that must be a 2nd/3rd continuation (prev2 >= 0xE0 or prev3 >= 0xF0),
// high bit only; errors are Y3 ^ Y5.
#define UTF8_BLOCK \
	VPERM2I128 $0x21, Y0, Y15, Y1; \
	VPALIGNR   $15, Y1, Y0, Y2; \
	VPALIGNR   $14, Y1, Y0, Y3; \
	VPALIGNR   $13, Y1, Y0, Y4; \
	VPSRLW     $4, Y2, Y5; \
	VPAND      Y10, Y5, Y5; \
	VPSHUFB    Y5, Y13, Y5; \
	VPAND      Y10, Y2, Y6; \
	VPSHUFB    Y6, Y12, Y6; \
	VPSRLW     $4, Y0, Y1; \
	VPAND      Y10, Y1, Y1; \
	VPSHUFB    Y1, Y11, Y1; \
	VPAND      Y5, Y6, Y5; \
	VPAND      Y1, Y5, Y5; \
	VPSUBUSB   Y9, Y3, Y3; \
	VPSUBUSB   Y8, Y4, Y4; \
	VPOR       Y3, Y4, Y3; \
	VPAND      Y7, Y3, Y3; \
	VPXOR      Y5, Y3, Y3; \
	VPOR       Y3, Y14, Y14; \
	VMOVDQU    Y0, Y15

// func utf8ValidAVX2(body []byte, tail *[32]byte) bool
//
// len(body) is a multiple of 32; tail holds the rest of the input padded
// with zeros, so that a sequence cut by the end of the input meets an ASCII
// byte and fails as TOO_SHORT.
TEXT ·utf8ValidAVX2(SB), NOSPLIT, $0-33
	MOVQ         body_base+0(FP), SI
	MOVQ         body_len+8(FP), CX
	MOVQ         tail+24(FP), DX
	VMOVDQU      utf8tbl<>+0x00(SB), Y13
	VMOVDQU      utf8tbl<>+0x20(SB), Y12
	VMOVDQU      utf8tbl<>+0x40(SB), Y11
	MOVL         $0x0f0f0f0f, AX
	MOVQ         AX, X10
	VPBROADCASTD X10, Y10
	MOVL         $0x60606060, AX
	MOVQ         AX, X9
	VPBROADCASTD X9, Y9
	MOVL         $0x70707070, AX
	MOVQ         AX, X8
	VPBROADCASTD X8, Y8
	MOVL         $0x80808080, AX
	MOVQ         AX, X7
	VPBROADCASTD X7, Y7
	VPXOR        Y15, Y15, Y15
	VPXOR        Y14, Y14, Y14
	XORQ         R8, R8           // previous block ends inside a sequence
	XORQ         R9, R9           // error seen by the ASCII shortcut

loop:
	CMPQ      CX, $64
	JB        one

	// Two ASCII blocks are skipped with one test.
	VMOVDQU   (SI), Y0
	VMOVDQU   32(SI), Y1
	VPOR      Y0, Y1, Y2
	VPMOVMSKB Y2, AX
	TESTL     AX, AX
	JNZ       one
	ORQ       R8, R9
	XORQ      R8, R8
	VMOVDQU   Y1, Y15
	ADDQ      $64, SI
	SUBQ      $64, CX
	JMP       loop

one:
	CMPQ      CX, $32
	JB        tail
	VMOVDQU   (SI), Y0
	VPMOVMSKB Y0, AX
	TESTL     AX, AX
	JNZ       full

	// ASCII block: its only possible error is a sequence cut at the end of
	// the previous block.
	ORQ     R8, R9
	XORQ    R8, R8
	VMOVDQU Y0, Y15
	JMP     next

full:
	UTF8_BLOCK
	VPSUBUSB utf8max<>(SB), Y0, Y1
	MOVL     $0, R8
	VPTEST   Y1, Y1
	SETNE    R8

next:
	ADDQ $32, SI
	SUBQ $32, CX
	JMP  loop

tail:
	// The zero-padded rest: fully checked, which also catches a sequence
	// cut at the end of the last block or of the input.
	VMOVDQU (DX), Y0
	UTF8_BLOCK
	VPTEST  Y14, Y14
	SETEQ   AX
	TESTQ   R9, R9
	JZ      done
	XORL    AX, AX

done:
	MOVB       AX, ret+32(FP)
	VZEROUPPER
	RET
