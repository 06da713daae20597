/**
 * The TCB evaluation rules of tcb.ts, one test per rule, over TCB info and QE identity documents
 * and PCK certificates produced by the test PKI (parsed the way verify.ts parses them) and TD
 * reports parsed from synthetic quotes.
 */
import { describe, expect, it } from 'vitest';
import { evaluateTdxTcb, parsePckPlatformTcb, parseQeIdentityTcb, parseTdxTcbInfo, type TcbEvaluationInput } from '../../../../sealer/attestation/tdx/tcb.js';
import { parseTdxQuote, type TdReport } from '../../../../shared/attestation/tdx/quote.js';
import {
  buildCollateral,
  buildTdxQuote,
  createTestPki,
  DEFAULT_TCB_LEVELS,
  DEFAULT_TDX_MODULE,
  DEFAULT_TDX_MODULE_IDENTITIES,
  TEST_CPU_SVN,
  TEST_PCE_SVN,
  type CollateralOptions,
  type PkiOptions,
  type QuoteOptions,
  type TestTcbLevel,
} from '../../../support/tdx-quote-builder.js';
import { expectRefusal } from '../../../support/tdx-helpers.js';

/** TEE_TCB_SVN with the module SVN, module major version and the third component (rest zero). */
const svn = (moduleSvn: number, major: number, third = 3): string => Buffer.from([moduleSvn, major, third, ...Array(13).fill(0)]).toString('hex');

describe('TDX TCB evaluation (tcb.ts)', async () => {
  const pki = await createTestPki();

  async function input(
    options: { collateral?: CollateralOptions; quote?: QuoteOptions; pki?: PkiOptions; report?: Partial<TdReport> } = {},
  ): Promise<TcbEvaluationInput> {
    const signer = options.pki ? await createTestPki(options.pki) : pki;
    const collateral = await buildCollateral(signer, options.collateral);
    const quote = parseTdxQuote(buildTdxQuote(signer, options.quote).quote);
    return {
      tcbInfo: parseTdxTcbInfo(collateral.tcb_info),
      qeIdentity: parseQeIdentityTcb(collateral.qe_identity),
      pck: parsePckPlatformTcb(signer.pckLeaf.cert),
      report: { ...quote.report, ...options.report },
      qeIsvSvn: quote.signature.qeReport.isvSvn,
    };
  }
  const evaluate = async (options: Parameters<typeof input>[0] = {}) => evaluateTdxTcb(await input(options));
  const withSvn = (teeTcbSvn: string, extra: QuoteOptions['report'] = {}): QuoteOptions => ({ report: { teeTcbSvn, ...extra } });

  it('reads the SGX components, PCESVN, PCEID and FMSPC of the PCK certificate', async () => {
    const other = await createTestPki({ cpuSvn: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6], pceSvn: 300, pceId: '0a0b', fmspc: '11223344AABB' });
    expect(parsePckPlatformTcb(other.pckLeaf.cert)).toEqual({
      sgxComponents: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6],
      pceSvn: 300,
      pceId: '0A0B',
      fmspc: '11223344AABB',
    });
    await expectRefusal(() => parsePckPlatformTcb(pki.pckCa.cert), 'pck_chain', /no readable Intel SGX extension/);
  });

  describe('rule 1: platform TCB level', () => {
    it('takes the first level whose SGX components, PCESVN and TDX components the platform meets', async () => {
      expect((await evaluate()).tcbStatus).toBe('UpToDate');
      // TEE_TCB_SVN[2] = 2 is below the first level's 3: the second (OutOfDate) level applies.
      const outdated = await evaluate({ quote: withSvn(svn(6, 1, 2)) });
      expect(outdated.tcbStatus).toBe('OutOfDate');
      expect(outdated.advisoryIds).toEqual(['INTEL-SA-00837', 'INTEL-SA-01036']);
    });

    it('moves to a lower level when one SGX component or the PCESVN is below the first level', async () => {
      const lowSgx = await evaluate({ pki: { cpuSvn: [2, 3, 2, 2, 4, 1, 0, 5, ...Array(8).fill(0)] } });
      expect(lowSgx.tcbStatus).toBe('OutOfDate');
      const lowPce = await evaluate({ pki: { pceSvn: TEST_PCE_SVN - 1 } });
      expect(lowPce.tcbStatus).toBe('OutOfDate');
    });

    it('refuses a platform below every level', async () => {
      await expectRefusal(() => evaluate({ pki: { pceSvn: 4 } }), 'tcb_status', 'the platform TCB is below every level of the TCB info (not UpToDate)');
      await expectRefusal(() => evaluate({ quote: withSvn(svn(6, 1, 1)) }), 'tcb_status');
    });

    it('skips TEE_TCB_SVN[0..1] when the module major version is non-zero, and only then', async () => {
      // Module SVN 4 < tdxtcbcomponents[0] = 5 of every level: irrelevant for major version 1...
      const major1 = await evaluate({ quote: withSvn(svn(4, 1)) });
      expect(major1.tcbStatus).toBe('UpToDate');
      expect(major1.tdxModule).toEqual({ identityId: 'TDX_01', svn: 4, tcbStatus: 'UpToDate' });
      // ...but compared for major version 0 (no module identity to judge the module by).
      await expectRefusal(() => evaluate({ quote: withSvn(svn(4, 0)) }), 'tcb_status');
      expect((await evaluate({ quote: withSvn(svn(5, 0)) })).tdxModule).toEqual({ identityId: null, svn: 5, tcbStatus: 'UpToDate' });
    });
  });

  describe('rule 2: TDX module', () => {
    it('major version 0: MRSIGNERSEAM must equal tdxModule.mrsigner', async () => {
      await expectRefusal(
        () => evaluate({ quote: withSvn(svn(5, 0), { mrSignerSeam: '01'.repeat(48) }) }),
        'tdx_module',
        /MRSIGNERSEAM 0101.* is not the tdxModule signer/,
      );
    });

    it('major version 0: SEAMATTRIBUTES under attributesMask must equal tdxModule.attributes', async () => {
      await expectRefusal(
        () => evaluate({ quote: withSvn(svn(5, 0), { seamAttributes: '0000000000000080' }) }),
        'tdx_module',
        /SEAMATTRIBUTES 0000000000000080/,
      );
      // A bit outside the mask does not count.
      const masked = await evaluate({
        collateral: { tdxModule: { ...DEFAULT_TDX_MODULE, attributesMask: 'FFFFFFFFFFFFFF7F' } },
        quote: withSvn(svn(5, 0), { seamAttributes: '0000000000000080' }),
      });
      expect(masked.tcbStatus).toBe('UpToDate');
    });

    it('major version > 0: the TDX_%02d identity signs and attributes the module', async () => {
      await expectRefusal(() => evaluate({ quote: withSvn(svn(6, 1), { mrSignerSeam: 'ff'.repeat(48) }) }), 'tdx_module', /is not the TDX_01 signer/);
      await expectRefusal(() => evaluate({ quote: withSvn(svn(6, 1), { seamAttributes: '0100000000000000' }) }), 'tdx_module', /TDX_01 attributes/);
      // The top-level tdxModule does not apply to a versioned module.
      const other = { ...DEFAULT_TDX_MODULE, mrsigner: 'AB'.repeat(48) };
      expect((await evaluate({ collateral: { tdxModule: other } })).tcbStatus).toBe('UpToDate');
    });

    it('refuses a major version without its identity (TDX_02 missing)', async () => {
      await expectRefusal(() => evaluate({ quote: withSvn(svn(6, 2)) }), 'tdx_module', 'the TCB info has no identity TDX_02 for TDX module major version 2');
    });

    it("takes the identity's first level whose isvsvn the module meets, and refuses below every level", async () => {
      await expectRefusal(() => evaluate({ quote: withSvn(svn(1, 1)) }), 'tdx_module', 'TDX module SVN 1 is below every TCB level of TDX_01');
      const third = await evaluate({ quote: withSvn(svn(3, 3)) });
      expect(third.tdxModule).toEqual({ identityId: 'TDX_03', svn: 3, tcbStatus: 'UpToDate' });
    });

    it('an OutOfDate module makes the verdict OutOfDate and lists its advisories', async () => {
      const verdict = await evaluate({ quote: withSvn(svn(3, 1)) });
      expect(verdict).toMatchObject({
        tcbStatus: 'OutOfDate',
        advisoryIds: ['INTEL-SA-01036', 'INTEL-SA-01099'],
        tdxModule: { identityId: 'TDX_01', svn: 3, tcbStatus: 'OutOfDate' },
      });
    });

    it('converges an OutOfDate module with a Configuration* platform into OutOfDateConfigurationNeeded', async () => {
      const levels: TestTcbLevel[] = [{ ...DEFAULT_TCB_LEVELS[0]!, tcbStatus: 'ConfigurationAndSWHardeningNeeded', advisoryIDs: ['INTEL-SA-00615'] }];
      expect((await evaluate({ collateral: { tcbLevels: levels } })).tcbStatus).toBe('ConfigurationAndSWHardeningNeeded');
      const verdict = await evaluate({ collateral: { tcbLevels: levels }, quote: withSvn(svn(3, 1)) });
      expect(verdict.tcbStatus).toBe('OutOfDateConfigurationNeeded');
      expect(verdict.advisoryIds).toEqual(['INTEL-SA-00615', 'INTEL-SA-01036', 'INTEL-SA-01099']);
    });

    it('refuses a revoked module', async () => {
      const identities = [{ id: 'TDX_01', ...DEFAULT_TDX_MODULE, tcbLevels: [{ isvsvn: 2, tcbStatus: 'Revoked' }] }];
      await expectRefusal(() => evaluate({ collateral: { tdxModuleIdentities: identities } }), 'tdx_module', 'TDX module TDX_01 SVN 6 is revoked');
    });
  });

  describe('rule 3: TEE_TCB_SVN2 (TD report 1.5)', () => {
    const v5 = (teeTcbSvn: string, teeTcbSvn2: string): QuoteOptions => ({ version: 5, bodyType: 3, report: { teeTcbSvn, teeTcbSvn2 } });

    it('advises a TD relaunch when only the module is out of date and the updated module meets the latest level', async () => {
      const verdict = await evaluate({ quote: v5(svn(3, 1), svn(4, 1)) });
      expect(verdict.tcbStatus).toBe('TDRelaunchAdvised');
      expect(verdict.tdxModule.tcbStatus).toBe('OutOfDate');
      // Major version 0 in TEE_TCB_SVN2: compared with the latest level's tdxtcbcomponents[0].
      expect((await evaluate({ quote: v5(svn(3, 1), svn(5, 0)) })).tcbStatus).toBe('TDRelaunchAdvised');
    });

    it('keeps OutOfDate when the updated module is not the latest either', async () => {
      expect((await evaluate({ quote: v5(svn(3, 1), svn(3, 1)) })).tcbStatus).toBe('OutOfDate');
      expect((await evaluate({ quote: v5(svn(3, 1), svn(4, 1, 2)) })).tcbStatus).toBe('OutOfDate');
      expect((await evaluate({ quote: v5(svn(3, 1), svn(4, 0)) })).tcbStatus).toBe('OutOfDate');
    });

    it('advises a relaunch with configuration needed when the platform needs configuration', async () => {
      const levels: TestTcbLevel[] = [{ ...DEFAULT_TCB_LEVELS[0]!, tcbStatus: 'ConfigurationNeeded' }];
      expect((await evaluate({ collateral: { tcbLevels: levels }, quote: v5(svn(3, 1), svn(4, 1)) })).tcbStatus).toBe('TDRelaunchAdvisedConfigurationNeeded');
    });

    it('does not advise a relaunch when the platform itself is out of date or the TEE_TCB_SVN2 identity is missing', async () => {
      // The SGX side (PCESVN) is out of date: a TD relaunch cannot fix it.
      expect((await evaluate({ pki: { pceSvn: TEST_PCE_SVN - 1 }, quote: v5(svn(3, 1), svn(4, 1)) })).tcbStatus).toBe('OutOfDate');
      await expectRefusal(() => evaluate({ quote: v5(svn(3, 1), svn(4, 2)) }), 'tdx_module', /no identity TDX_02 for the TEE_TCB_SVN2/);
    });

    it('ignores TEE_TCB_SVN2 when nothing is out of date', async () => {
      expect((await evaluate({ quote: v5(svn(6, 1), svn(0, 0, 0)) })).tcbStatus).toBe('UpToDate');
    });
  });

  it('rule 4: advisories are the union of the platform, module and QE identity levels, without duplicates', async () => {
    const verdict = await evaluate({
      quote: withSvn(svn(3, 1, 2)),
      collateral: { qeTcbLevels: [{ isvsvn: 4, tcbStatus: 'UpToDate', advisoryIDs: ['INTEL-SA-00999'] }] },
    });
    expect(verdict.tcbStatus).toBe('OutOfDate');
    expect(verdict.advisoryIds).toEqual(['INTEL-SA-00837', 'INTEL-SA-01036', 'INTEL-SA-01099', 'INTEL-SA-00999']);
  });

  it('rule 5: the PCK certificate and the TCB info must name the same PCEID', async () => {
    await expectRefusal(() => evaluate({ collateral: { pceId: '0100' } }), 'collateral', 'the TCB info is for PCEID 0100, the PCK certificate for PCEID 0000');
    await expectRefusal(() => evaluate({ pki: { pceId: '0001' } }), 'collateral', /PCK certificate for PCEID 0001/);
  });

  it('rule 6: reports the tcbEvaluationDataNumber of the TCB info and the QE identity', async () => {
    const verdict = await evaluate({ collateral: { tcbEvaluationDataNumber: 19, qeTcbEvaluationDataNumber: 18 } });
    expect(verdict.tcbEvaluationDataNumber).toEqual({ tcbInfo: 19, qeIdentity: 18 });
  });

  it('converges an OutOfDate quoting enclave into the verdict and refuses a revoked one', async () => {
    const qeOutdated = [
      { isvsvn: 5, tcbStatus: 'UpToDate' },
      { isvsvn: 4, tcbStatus: 'OutOfDate', advisoryIDs: ['INTEL-SA-00615'] },
    ];
    expect(await evaluate({ collateral: { qeTcbLevels: qeOutdated } })).toMatchObject({ tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-00615'] });
    await expectRefusal(() => evaluate({ collateral: { qeTcbLevels: [{ isvsvn: 4, tcbStatus: 'Revoked' }] } }), 'qe_identity', /revoked/);
  });

  it('refuses a malformed TCB info instead of guessing', async () => {
    const good = await input();
    const json = JSON.parse((await buildCollateral(pki)).tcb_info) as Record<string, unknown>;
    await expectRefusal(() => parseTdxTcbInfo(JSON.stringify({ ...json, tdxModule: undefined })), 'collateral', /tdxModule is not an object/);
    const shortLevels = { ...json, tcbLevels: [{ tcb: { sgxtcbcomponents: [{ svn: 1 }], pcesvn: 1, tdxtcbcomponents: [] }, tcbStatus: 'UpToDate' }] };
    await expectRefusal(() => parseTdxTcbInfo(JSON.stringify(shortLevels)), 'collateral', /not 16/);
    expect(good.tcbInfo.tdxModuleIdentities.map((identity) => identity.id)).toEqual(DEFAULT_TDX_MODULE_IDENTITIES.map((identity) => identity.id));
    expect(good.tcbInfo.tcbLevels[0]!.tcb.sgx).toEqual(TEST_CPU_SVN);
  });
});
